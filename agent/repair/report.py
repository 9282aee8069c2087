"""The repair report: what was found, what each action did, every file change with its diff."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.disk.atomic import write_bytes_atomically
from agent.repair.actions import RepairPlan
from agent.repair.runner import RepairOutcome


@dataclass(frozen=True)
class ImageDescription:
    source: Path
    source_format: str
    repaired: Path | None  # None in a dry run
    repaired_format: str | None
    attach_method: str


def build_report(
    job_id: str,
    plan: RepairPlan,
    image: ImageDescription,
    outcome: RepairOutcome,
    phase_seconds: dict[str, float],
) -> dict[str, Any]:
    changes = outcome.changes
    return {
        "job_id": job_id,
        "operation": plan.operation.value,
        "dry_run": plan.dry_run,
        "in_place": plan.in_place,
        "image": {
            "source": str(image.source),
            "source_format": image.source_format,
            "repaired": str(image.repaired) if image.repaired else None,
            "repaired_format": image.repaired_format,
            "attach_method": image.attach_method,
        },
        "disks": outcome.disks,
        "guest": outcome.guest,
        **({"guest_info": outcome.guest_info} if outcome.guest_info is not None else {}),
        "filesystem_checks": [r.describe() for r in outcome.fsck],
        "actions": [o.describe(changes) if changes else _bare(o) for o in outcome.outcomes],
        "files": [c.describe() for c in changes.changes] if changes else [],
        "phase_seconds": phase_seconds,
        **({"boot_check": outcome.boot_check} if outcome.boot_check is not None else {}),
    }


def _bare(outcome: Any) -> dict[str, Any]:
    return {"action": outcome.action, "status": outcome.status, "reason": outcome.reason}


def write_report(report: dict[str, Any], target: Path, job_id: str, state_dir: Path) -> int:
    """Write the report atomically; returns its size in bytes."""
    data = json.dumps(report, indent=2, sort_keys=False).encode() + b"\n"
    write_bytes_atomically(target, data, job_id, state_dir)
    return len(data)
