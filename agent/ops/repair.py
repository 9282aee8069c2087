"""The offline repair operations: offline_fix, boot_repair, fs_repair, initramfs_regenerate,
selinux_prep and lvm_repair.

The source image is never modified: it is converted to the output first (as convert does,
under a temporary name) and the output is repaired, then published. ``parameters.in_place``
repairs a qcow2 or raw input itself; ``parameters.dry_run`` attaches the source read-only and
only reports what would change. The report goes to ``<output_path>/<job_id>_report.json`` and
into the result's details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from agent.boot.repair_step import check_repaired_boot
from agent.disk import qemu_img
from agent.disk.atomic import atomic_output
from agent.disk.attach import DiskImage, attached_disks
from agent.disk.journal import AttachmentJournal
from agent.errors import CapabilityMissing, InvalidSpec, OperationNotImplemented, ToolFailed
from agent.ops.base import JobContext, OpResult, Output
from agent.ops.convert import _check_target, check_compression, output_path
from agent.ops.image import inspect_input, unpinned_source
from agent.probes import run_probe
from agent.repair.actions import RepairPlan, plan_repair
from agent.repair.phases import PhaseClock
from agent.repair.report import ImageDescription, build_report, write_report
from agent.repair.runner import NodeAbilities, RepairOutcome, phases_for, repair_disk
from agent.repair.vm_disks import OtherDisk, check_other_disks, pinned_other_disks
from protocol.errors import InvalidArgument
from protocol.migration_jobs import disk_job_parameters
from protocol.spec import CompressionType
from protocol.spec import Operation as Op

log = logging.getLogger(__name__)

TOOL_TIMEOUT_MARGIN = 120.0
IN_PLACE_FORMATS = ("qcow2", "raw")


async def _require_lvm() -> None:
    probes = [await asyncio.to_thread(run_probe, name) for name in ("device_mapper", "lvm")]
    missing = [p for p in probes if not p.available]
    if missing:
        why = "; ".join(f"{p.name} {p.detail}" for p in missing)
        raise CapabilityMissing(
            f"lvm_repair needs device-mapper and lvm on this node: {why}", phase="validate"
        )
    raise OperationNotImplemented(
        "lvm_repair: activating the guest's volume groups is not implemented yet",
        phase="validate",
    )


def _workdir(ctx: JobContext) -> Path:
    workdir = ctx.scratch_dir / f"repair-{ctx.job_id}"
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _remove_workdir(workdir: Path) -> None:
    # rmdir only, never a recursive delete: if anything were still mounted below, a recursive
    # delete would destroy the guest's files.
    for path in (workdir / "root", workdir):
        with contextlib.suppress(OSError):
            path.rmdir()


async def _abilities(ctx: JobContext) -> NodeAbilities:
    chroot = await asyncio.to_thread(run_probe, "chroot")
    return NodeAbilities(
        can_chroot=chroot.available,
        use_selinux_tools=ctx.spec.capability_requirements.needs_selinux_tools,
    )


def _other_disks(ctx: JobContext) -> tuple[str, list[OtherDisk]]:
    """The job's disk id and the VM's other disks to attach with it (a migration's repair).

    Raises:
        InvalidSpec: parameters.migration is malformed.
        PathNotAllowed: an attach_outputs path the policy refuses.
    """
    try:
        migration = disk_job_parameters(ctx.spec)
    except InvalidArgument as exc:
        raise InvalidSpec(exc.message, phase="validate") from None
    if migration is None:
        return "", []
    others = check_other_disks(ctx.policy, migration.attach_outputs, own=[ctx.input_path])
    return migration.disk_id, others


async def _repair(
    ctx: JobContext,
    plan: RepairPlan,
    clock: PhaseClock,
    image: DiskImage,
    others: list[OtherDisk],
) -> tuple[RepairOutcome, str]:
    workdir = _workdir(ctx)
    journal = AttachmentJournal(ctx.state_dir, ctx.job_id)
    abilities = await _abilities(ctx)
    timeout = ctx.spec.execution_policy.timeout_seconds + TOOL_TIMEOUT_MARGIN
    more = f" and {len(others)} other disk(s)" if others else ""
    clock.enter("attach", f"attaching {image.real_path.name} ({image.format}){more}")
    try:
        with pinned_other_disks(ctx.policy, others, writable=not plan.dry_run) as extra:
            async with attached_disks([image, *extra], workdir, journal, timeout=timeout) as disks:
                outcome = await repair_disk(
                    disks, plan, workdir, journal, clock, abilities, ctx.spec.parameters
                )
                method = disks[0].method
    finally:
        _remove_workdir(workdir)
    return outcome, method


async def _convert(
    ctx: JobContext, info: qemu_img.ImageInfo, tmp: Path, fmt: str, clock: PhaseClock
) -> None:
    total = info.virtual_size
    clock.enter("convert", f"{info.format} -> {fmt}")

    def on_progress(percent: float) -> None:
        done = int(total * percent / 100)
        clock.within("convert", percent / 100, bytes_done=done, bytes_total=total)

    compression = ctx.spec.convert_parameters().effective_compression_type
    await qemu_img.convert(
        unpinned_source(ctx),  # the disk's byte range of image.path, for a migration
        info.format,
        tmp,
        fmt,
        compress=compression is not None,
        progress=on_progress,
        timeout=ctx.spec.execution_policy.timeout_seconds + TOOL_TIMEOUT_MARGIN,
        # zlib is qemu-img's default: its argv stays as it was.
        compression_type=compression.value if compression is CompressionType.ZSTD else None,
    )


def _check_in_place(info: qemu_img.ImageInfo) -> None:
    if info.format not in IN_PLACE_FORMATS:
        raise InvalidSpec(
            f"parameters.in_place: only qcow2 or raw images can be repaired in place; "
            f"this image is {info.format}",
            phase="validate",
        )


def _finish(
    ctx: JobContext,
    plan: RepairPlan,
    described: ImageDescription,
    outcome: RepairOutcome,
    clock: PhaseClock,
    started: float,
) -> OpResult:
    """Write the report; fail the job (after writing it) when an action failed.

    Returns:
        The report as the only output (the caller adds the image once it is published).
    """
    clock.enter("finalize", "writing the report")
    phase_seconds = clock.finish()
    report = build_report(ctx.job_id, plan, described, outcome, phase_seconds)
    outputs: list[Output] = []
    where = "the job's result"
    # A migration's job writes no file of its own into the output directory (nothing may
    # appear there before the migration publishes): its report travels in the result and
    # becomes part of <vm>.report.json.
    if "migration" not in ctx.spec.parameters:
        target = ctx.output_dir / f"{ctx.job_id}_report.json"
        ctx.policy.check_output_file(target, ctx.input_path)
        size = write_report(report, target, ctx.job_id, ctx.state_dir)
        outputs.append(Output(kind="report", path=target, size_bytes=size, format="json"))
        where = str(target)
    if outcome.failed:
        names = ", ".join(f"{o.action} ({o.reason})" for o in outcome.failed)
        raise ToolFailed(f"repair actions failed: {names}; see {where}", phase="finalize")
    metrics = {
        "duration_seconds": round(time.monotonic() - started, 3),
        "phase_seconds": phase_seconds,
        "files_changed": len(outcome.changes.changes) if outcome.changes else 0,
        "actions": {o.action: o.status for o in outcome.outcomes},
    }
    return OpResult(outputs=outputs, metrics=metrics, details=report)


def _boot_disks(own: DiskImage, others: list[OtherDisk]) -> list[tuple[Path, str]]:
    return [(own.path, own.format), *((o.path, o.format) for o in others)]


async def run_repair(ctx: JobContext) -> OpResult:
    """Run one of the repair operations; see the module docstring."""
    started = time.monotonic()
    plan = plan_repair(ctx.spec)
    if plan.operation is Op.LVM_REPAIR:
        await _require_lvm()
    disk_id, others = _other_disks(ctx)
    converting = not (plan.dry_run or plan.in_place)
    phases = ["inspect", *(["convert"] if converting else []), *phases_for(plan), "finalize"]
    clock = PhaseClock(ctx.progress, phases)
    clock.enter("inspect", f"reading metadata of {ctx.input_path}")
    info = await inspect_input(ctx)
    if not converting:
        if plan.in_place:
            _check_in_place(info)
        own = DiskImage(ctx.input_path, info.format, plan.in_place, disk_id=disk_id)
        outcome, method = await _repair(ctx, plan, clock, own, others)
        await check_repaired_boot(ctx, plan, clock, outcome, _boot_disks(own, others))
        repaired = ctx.input_path if plan.in_place else None
        described = ImageDescription(
            ctx.input_path, info.format, repaired, info.format if repaired else None, method
        )
        return _finish(ctx, plan, described, outcome, clock, started)
    fmt = ctx.spec.convert_parameters().output_format.value
    target = output_path(ctx, fmt)
    _check_target(ctx, target)
    await check_compression(ctx, ctx.spec.convert_parameters().effective_compression_type)
    with atomic_output(target, ctx.job_id, ctx.state_dir) as output:
        await _convert(ctx, info, output.tmp, fmt, clock)
        own = DiskImage(output.tmp, fmt, True, disk_id=disk_id)
        outcome, method = await _repair(ctx, plan, clock, own, others)
        await check_repaired_boot(ctx, plan, clock, outcome, _boot_disks(own, others))
        described = ImageDescription(ctx.input_path, info.format, target, fmt, method)
        result = _finish(ctx, plan, described, outcome, clock, started)
        output.commit()
    image = Output(kind="image", path=target, size_bytes=target.stat().st_size, format=fmt)
    return OpResult([image, *result.outputs], result.metrics, result.details)
