"""The offline repair operations: offline_fix, boot_repair, fs_repair, initramfs_regenerate,
selinux_prep and lvm_repair.

The source image is never modified: it stays pinned and read-only beneath a qcow2 overlay in
the agent's scratch space (:mod:`agent.disk.overlay`); the overlay is attached, the guest found
and repaired in it, its file systems trimmed (``parameters.sparsify``, true by default: see
:mod:`agent.ops.sparsify`), and only then is the output made from the overlay in one copy
pass, under a temporary name, and published. A repair that fails costs no copy: the report
says why and nothing is written but the report. ``artifacts.store_fixed_image: false`` writes
the report only. ``parameters.in_place`` repairs (and trims) a qcow2 or raw input itself;
``parameters.dry_run`` attaches the source read-only and only reports what would change. The
report goes to ``<output_path>/<job_id>_report.json`` and into the result's details; its
``space_reclaim`` says what the trim gave back per file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.background import together
from agent.boot.repair_step import check_repaired_boot
from agent.disk import qemu_img
from agent.disk.atomic import atomic_output
from agent.disk.attach import DiskImage, attached_disks
from agent.disk.journal import AttachmentJournal
from agent.disk.overlay import Overlay, data_extents, overlay_over
from agent.disk.space import check_space, required_bytes
from agent.errors import CapabilityMissing, InvalidSpec, OperationNotImplemented, ToolFailed
from agent.ops.base import JobContext, OpResult, Output
from agent.ops.convert import _check_target, _create_options, check_compression, output_path
from agent.ops.image import CheckedInput, checked_input, inspect_input
from agent.ops.sparsify import (
    account,
    copy_out,
    disabled,
    kept_data,
    source_data,
    sparsify_parameter,
)
from agent.paths import PinnedFile, pinned_output
from agent.probes import run_probe
from agent.repair.actions import RepairPlan, plan_repair
from agent.repair.phases import PhaseClock
from agent.repair.report import ImageDescription, build_report, write_report
from agent.repair.runner import NodeAbilities, RepairOutcome, phases_for, repair_disk
from agent.repair.vm_disks import OtherDisk, check_other_disks, pinned_other_disks
from protocol.errors import InvalidArgument
from protocol.migration_jobs import disk_job_parameters
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
    journal: AttachmentJournal,
    *,
    trim: bool = False,
) -> tuple[RepairOutcome, str]:
    """Attach, repair, (trim,) detach. ``journal`` is the job's one journal: a second one for
    the same job would overwrite the first's records (the overlay's, say)."""
    workdir = _workdir(ctx)
    abilities = await _abilities(ctx)
    timeout = _tool_timeout(ctx)
    more = f" and {len(others)} other disk(s)" if others else ""
    clock.enter("attach", f"attaching {image.real_path.name} ({image.format}){more}")
    try:
        with pinned_other_disks(ctx.policy, others, writable=not plan.dry_run) as extra:
            async with attached_disks([image, *extra], workdir, journal, timeout=timeout) as disks:
                outcome = await repair_disk(
                    disks, plan, workdir, journal, clock, abilities, ctx.spec.parameters, trim=trim
                )
                method = disks[0].method
    finally:
        _remove_workdir(workdir)
    return outcome, method


def _tool_timeout(ctx: JobContext) -> float:
    return ctx.spec.execution_policy.timeout_seconds + TOOL_TIMEOUT_MARGIN


async def _copy_out(
    ctx: JobContext, overlay: Overlay, tmp: PinnedFile, fmt: str, clock: PhaseClock
) -> None:
    """The one copy pass of the job: the repaired, trimmed overlay into the temporary output."""
    total = overlay.virtual_size
    clock.enter("convert", f"overlay ({overlay.backing_format} beneath) -> {fmt}")

    def on_progress(percent: float) -> None:
        done = int(total * percent / 100)
        clock.within("convert", percent / 100, bytes_done=done, bytes_total=total)

    await copy_out(
        overlay,
        tmp.tool_path,
        fmt,
        ctx.spec.convert_parameters().effective_compression_type,
        on_progress,
        job_id=ctx.job_id,
        timeout=_tool_timeout(ctx),
        fd=tmp.fd,
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
    reclaim: dict[str, Any],
) -> OpResult:
    """Write the report; fail the job (after writing it) when an action failed.

    Returns:
        The report as the only output (the caller adds the image once it is published).
    """
    clock.enter("finalize", "writing the report")
    phase_seconds = clock.finish()
    report = build_report(ctx.job_id, plan, described, outcome, phase_seconds)
    report["store_fixed_image"] = ctx.spec.artifacts.store_fixed_image
    report["space_reclaim"] = reclaim
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
        "reclaimed_bytes": reclaim.get("reclaimed_bytes"),
    }
    return OpResult(outputs=outputs, metrics=metrics, details=report)


@dataclass(frozen=True)
class _Choices:
    """What the job writes: the repaired image (``copy``), and whether free space is
    trimmed first (``trim``); ``no_trim`` says why not, for the report."""

    copy: bool
    trim: bool
    no_trim: str


def _choices(ctx: JobContext, plan: RepairPlan) -> _Choices:
    """``artifacts.store_fixed_image`` and ``parameters.sparsify``, checked together.

    Raises:
        InvalidSpec: store_fixed_image false with in_place or for a migration's disk;
            sparsify not a boolean.
    """
    sparsify = sparsify_parameter(ctx.spec, default=True)
    keep = ctx.spec.artifacts.store_fixed_image
    if not keep and plan.in_place:
        raise InvalidSpec(
            "artifacts.store_fixed_image: false cannot be combined with parameters.in_place "
            "(an in-place repair writes the input itself)",
            phase="validate",
        )
    if not keep and "migration" in ctx.spec.parameters:
        raise InvalidSpec(
            "artifacts.store_fixed_image: a migration's repair writes the VM's boot disk; "
            "it cannot be false",
            phase="validate",
        )
    if not keep and plan.boot_check:
        raise InvalidSpec(
            "parameters.boot_check: needs the repaired image, and artifacts.store_fixed_image "
            "false writes none",
            phase="validate",
        )
    copy = keep and not (plan.dry_run or plan.in_place)
    if plan.dry_run:
        why = "dry run: nothing is written"
    elif not keep:
        why = "artifacts.store_fixed_image is false: no image is written"
    elif not sparsify:
        why = "parameters.sparsify is false: every block is kept"
    else:
        why = ""
    return _Choices(copy=copy, trim=not why, no_trim=why)


async def _repair_source(
    ctx: JobContext,
    plan: RepairPlan,
    clock: PhaseClock,
    choices: _Choices,
    disk_id: str,
    others: list[OtherDisk],
    started: float,
) -> OpResult:
    """A dry run (the source read-only) or an in-place repair (the source itself)."""
    info = await inspect_input(ctx)
    if plan.in_place:
        _check_in_place(info)
    trim = choices.trim and plan.in_place
    own = DiskImage(ctx.input_path, info.format, plan.in_place, disk_id=disk_id, discard=trim)
    before = await data_extents(ctx.input_path, info.format) if trim else []
    journal = AttachmentJournal(ctx.state_dir, ctx.job_id)
    outcome, method = await _repair(ctx, plan, clock, own, others, journal, trim=trim)
    await check_repaired_boot(ctx, plan, clock, outcome, _boot_disks(own.path, own.format, others))
    if trim:
        reclaim = account(outcome.trims, before, await data_extents(ctx.input_path, info.format))
    else:
        reclaim = disabled(choices.no_trim)
    repaired = ctx.input_path if plan.in_place else None
    described = ImageDescription(
        ctx.input_path, info.format, repaired, info.format if repaired else None, method
    )
    return _finish(ctx, plan, described, outcome, clock, started, reclaim)


def _boot_disks(path: Path, fmt: str, others: list[OtherDisk]) -> list[tuple[Path, str]]:
    """The disks a boot check boots: the repaired one first, then the VM's other disks."""
    return [(path, fmt), *((o.path, o.format) for o in others)]


async def run_repair(ctx: JobContext) -> OpResult:
    """Run one of the repair operations; see the module docstring."""
    started = time.monotonic()
    plan = plan_repair(ctx.spec)
    if plan.operation is Op.LVM_REPAIR:
        await _require_lvm()
    disk_id, others = _other_disks(ctx)
    choices = _choices(ctx, plan)
    phases = [
        "inspect",
        *phases_for(plan, trim=choices.trim),
        *(["convert"] if choices.copy else []),
        *(["boot_check"] if plan.boot_check else []),
        "finalize",
    ]
    clock = PhaseClock(ctx.progress, phases)
    clock.enter("inspect", f"reading metadata of {ctx.input_path}")
    if plan.dry_run or plan.in_place:
        return await _repair_source(ctx, plan, clock, choices, disk_id, others, started)
    params = ctx.spec.convert_parameters()
    fmt = params.output_format.value
    target = output_path(ctx, fmt)
    if choices.copy:
        _check_target(ctx, target)
        await check_compression(ctx, params.effective_compression_type)
    journal = AttachmentJournal(ctx.state_dir, ctx.job_id)
    needed: int | None = None
    made: list[Overlay] = []

    async def prepare(source: CheckedInput, overlays: contextlib.AsyncExitStack) -> None:
        """While qemu-img check proves the source: measure what the copy will need (a 127 GiB
        dynamic VHD holding 250 KB needs little; the repair adds at most what it writes, far
        less than the slack measure leaves) and create the overlay, both read-only on it."""

        async def measure() -> None:
            nonlocal needed
            options = _create_options(params.effective_compression_type)
            needed = await required_bytes(source.tool_path, source.info, fmt, options)

        async def create() -> None:
            info = source.info
            making = overlay_over(
                source.tool_path, info.format, info.virtual_size, _workdir(ctx), journal
            )
            made.append(await overlays.enter_async_context(making))

        await together(*([measure()] if choices.copy else []), create())

    # The overlay is removed after the source's pin is released: nothing reads it by then.
    async with (
        contextlib.AsyncExitStack() as overlays,
        checked_input(ctx, alongside_check=lambda s: prepare(s, overlays)) as source,
    ):
        # The space is checked before anything is attached.
        if needed is not None:
            check_space(needed, ctx.output_dir, ctx.input_path)
        return await _repair_in_overlay(
            ctx, plan, clock, choices, source, made[0], disk_id, others, journal, started
        )


async def _repair_in_overlay(
    ctx: JobContext,
    plan: RepairPlan,
    clock: PhaseClock,
    choices: _Choices,
    source: CheckedInput,
    overlay: Overlay,
    disk_id: str,
    others: list[OtherDisk],
    journal: AttachmentJournal,
    started: float,
) -> OpResult:
    """Repair and trim in ``overlay`` (over the pinned ``source``), then the one copy pass."""
    info = source.info
    fmt = ctx.spec.convert_parameters().output_format.value
    target = output_path(ctx, fmt)
    async with contextlib.AsyncExitStack() as stack:
        # The source's data, for the report, mapped while the job goes on: nothing writes it.
        before = await stack.enter_async_context(source_data(source)) if choices.trim else None
        own = DiskImage(overlay.path, "qcow2", True, disk_id=disk_id, discard=choices.trim)
        outcome, method = await _repair(ctx, plan, clock, own, others, journal, trim=choices.trim)
        if outcome.failed or not choices.copy:
            # A failed repair costs no copy: the report says why, the job fails.
            described = ImageDescription(ctx.input_path, info.format, None, None, method)
            reclaim = disabled(choices.no_trim or "the repaired image was not written")
            return _finish(ctx, plan, described, outcome, clock, started, reclaim)
        # What the trim kept, mapped while the copy reads the overlay: nothing writes it now.
        kept = await stack.enter_async_context(kept_data(overlay, before)) if before else None
        with (
            atomic_output(target, ctx.job_id, ctx.state_dir) as output,
            pinned_output(ctx.policy, output.tmp) as tmp,
        ):
            await _copy_out(ctx, overlay, tmp, fmt, clock)
            # The output as it will be published, booted through a throwaway overlay.
            disks = _boot_disks(output.tmp, fmt, others)
            await check_repaired_boot(ctx, plan, clock, outcome, disks)
            if kept is not None:
                reclaim = account(outcome.trims, *(await kept()))
            else:
                reclaim = disabled(choices.no_trim)
            described = ImageDescription(ctx.input_path, info.format, target, fmt, method)
            result = _finish(ctx, plan, described, outcome, clock, started, reclaim)
            output.commit()
    image = Output(kind="image", path=target, size_bytes=target.stat().st_size, format=fmt)
    return OpResult([image, *result.outputs], result.metrics, result.details)
