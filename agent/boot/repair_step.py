"""The boot check as the last step of a repair: boot the repaired disks, record the verdict.

A guest that does not boot fails the job like a failed repair action (the report is written
first, nothing is published), with the stage it stopped at in the error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agent.boot.check import GuestDisk, boot_check
from agent.ops.base import JobContext
from agent.repair.actions import RepairPlan
from agent.repair.fixes.base import Outcome, OutcomeStatus
from agent.repair.phases import PhaseClock
from agent.repair.runner import RepairOutcome

ACTION = "boot_check"
PHASE = "boot_check"
ESP_TYPES = frozenset({"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "ef", "0xef"})


def firmware_of(disks: list[dict[str, Any]]) -> str:
    """``uefi`` when the boot disk has an EFI system partition, else ``bios``.

    The VM's own firmware setting stays with VMware; the disk says what it was installed for.
    """
    if not disks:
        return "bios"
    types = {str(p.get("type") or "").lower() for p in disks[0].get("partitions", [])}
    return "uefi" if types & ESP_TYPES else "bios"


async def check_repaired_boot(
    ctx: JobContext,
    plan: RepairPlan,
    clock: PhaseClock,
    outcome: RepairOutcome,
    disks: Sequence[tuple[Any, str]],
) -> None:
    """Boot the repaired ``disks`` ((path, format), the boot disk first) when the job asks.

    Skipped when a repair action already failed (the job fails for that).
    """
    if not plan.boot_check or outcome.failed:
        return
    firmware = firmware_of(outcome.disks)
    clock.enter(PHASE, f"booting the repaired guest ({firmware}) through an overlay")
    started = time.monotonic()
    result = await boot_check(
        [GuestDisk(path, fmt) for path, fmt in disks],
        firmware,
        ctx.scratch_dir / f"boot-{ctx.job_id}",
        time_limit=plan.boot_check_seconds,
        on_progress=lambda fraction, message: clock.within(PHASE, fraction, message),
    )
    outcome.boot_check = result.describe()
    if result.booted:
        status = OutcomeStatus.APPLIED
        reason = f"booted: userspace after {result.seconds:.0f} s ({result.accelerator})"
    else:
        status = OutcomeStatus.FAILED
        stage = result.stage.value if result.stage else "unknown"
        reason = f"did not boot: {stage}: {result.detail}"
    check = Outcome(ACTION, status, reason, seconds=time.monotonic() - started)
    outcome.outcomes.append(check)
