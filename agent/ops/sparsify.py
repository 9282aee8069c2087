"""Space reclaim: copy only the blocks the guest still uses (``parameters.sparsify``).

The source is attached read-only beneath a qcow2 overlay in the agent's scratch space
(:mod:`agent.disk.overlay`), the guest's file systems are mounted from the overlay and
trimmed (``fstrim``), so their free blocks become zero clusters of the overlay, and the
output is made from the overlay in one ``qemu-img convert`` pass, which skips holes and
zeros. The source is never written. Files keep their content: only blocks no file uses are
dropped. The report's ``space_reclaim`` says, per file system, how much free space was
discarded and how many data bytes of the partition the source held and the trim kept.

Repairs reclaim by default (:mod:`agent.ops.repair`); ``convert`` does so only when asked,
and then needs the mount capability (``capability_requirements.needs_mount: true``, so the
job is placed on a node that can mount). ``parameters.sparsify: false`` keeps every block.
A convert's sparsified output differs from the source in the discarded blocks by design, so
it cannot be combined with ``parameters.migration.verify_content``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from agent.background import meanwhile
from agent.disk import qemu_img
from agent.disk.atomic import atomic_output
from agent.disk.attach import AttachedDisk, DiskImage, attached_disks
from agent.disk.journal import AttachmentJournal
from agent.disk.mount import mounted
from agent.disk.overlay import Extent, Overlay, data_extents, kept_extents, overlay_over
from agent.disk.writeback import early_writeback
from agent.errors import CapabilityMissing, InvalidSpec, ToolFailed
from agent.ops.base import JobContext, OpResult, Output
from agent.ops.disk_job import migration_parameters
from agent.ops.image import CheckedInput
from agent.paths import pinned_output
from agent.probes import run_probe
from agent.repair.detect import LINUX_FILESYSTEMS
from agent.repair.mounting import mount_options
from agent.repair.reclaim import MountedFilesystem, TrimResult, reclaim_summary, trim_filesystems
from protocol.spec import CompressionType, JobSpec

log = logging.getLogger(__name__)

FIELD = "parameters.sparsify"
TOOL_TIMEOUT_MARGIN = 120.0
NEEDED_PROBES = ("mount", "loop", "fuse", "qemu_storage_daemon")
TRIMMABLE = LINUX_FILESYSTEMS | {"vfat"}
ProgressFn = qemu_img.ProgressCallback


def sparsify_parameter(spec: JobSpec, *, default: bool) -> bool:
    """``parameters.sparsify`` of a job (``default`` when absent).

    Raises:
        InvalidSpec: it is not true or false.
    """
    value = spec.parameters.get("sparsify", default)
    if not isinstance(value, bool):
        raise InvalidSpec(f"{FIELD}: must be true or false", phase="validate")
    return value


def convert_sparsify_requested(ctx: JobContext) -> bool:
    """Whether a convert job asks for space reclaim, checked against what it also asks.

    Raises:
        InvalidSpec: not a boolean; asked without ``capability_requirements.needs_mount``;
            asked with ``parameters.migration.verify_content``.
    """
    if not sparsify_parameter(ctx.spec, default=False):
        return False
    if not ctx.spec.capability_requirements.needs_mount:
        raise InvalidSpec(
            f"{FIELD}: trimming mounts the guest's file systems; set "
            "capability_requirements.needs_mount to true so the job runs on a node that can",
            phase="validate",
        )
    migration = migration_parameters(ctx)
    if migration is not None and migration.verify_content:
        raise InvalidSpec(
            f"{FIELD}: cannot be combined with parameters.migration.verify_content (the "
            "discarded free space reads as zeros, so the output differs from the source)",
            phase="validate",
        )
    return True


async def require_mount_capability() -> None:
    """Raises CapabilityMissing (naming the probe) when this node cannot trim a guest."""
    probes = [await asyncio.to_thread(run_probe, name) for name in NEEDED_PROBES]
    missing = [p for p in probes if not p.available]
    if missing:
        why = "; ".join(f"{p.name} {p.detail}" for p in missing)
        raise CapabilityMissing(
            f"{FIELD}: reclaiming space needs mount, loop and FUSE on this node: {why}",
            phase="validate",
        )


def source_data(
    source: CheckedInput,
) -> contextlib.AbstractAsyncContextManager[asyncio.Task[list[Extent]]]:
    """The source's data extents (for the report), mapped in the background while the job
    attaches, repairs and trims: nothing writes the pinned source beneath the overlay."""
    return meanwhile(data_extents(source.tool_path, source.info.format), "map-source")


KeptData = Callable[[], Awaitable[tuple[list[Extent], list[Extent]]]]


@contextlib.asynccontextmanager
async def kept_data(
    overlay: Overlay, source: asyncio.Task[list[Extent]]
) -> AsyncIterator[KeptData]:
    """Map what the trimmed overlay keeps (:func:`agent.disk.overlay.kept_extents`) in the
    background, while the copy reads it: nothing writes the overlay once it is detached.

    Yields:
        A function that returns (the source's data extents, the kept ones). A background map
        that failed is run again, once, on its own (a ``qemu-img map`` started beside a
        convert once failed to create its threads on a loaded node).
    """

    async def both() -> tuple[list[Extent], list[Extent]]:
        extents = await source
        return extents, await kept_extents(overlay, extents)

    async with meanwhile(both(), "map-kept") as task:

        async def result() -> tuple[list[Extent], list[Extent]]:
            try:
                return await task
            except ToolFailed as exc:
                log.warning("map beside the copy failed; mapping again error=%s", exc)
                return await both()

        yield result


async def copy_out(
    overlay: Overlay,
    tmp: Path,
    fmt: str,
    compression: CompressionType | None,
    progress: ProgressFn,
    *,
    job_id: str,
    timeout: float,
    fd: int | None = None,
) -> None:
    """The single copy pass: the overlay (and, through it, the source) into ``tmp``.

    qemu-img skips what reads as zeros: holes of the source, and the zero clusters the trim
    left in the overlay. What it copied is :func:`agent.disk.overlay.kept_extents`.

    Args:
        tmp: the temporary output as qemu-img is to open it (a pinned path).
        fd: the temporary output's descriptor, for early write-back while it is written.

    Raises:
        ToolFailed: qemu-img failed.
    """
    async with contextlib.AsyncExitStack() as stack:
        if fd is not None:
            await stack.enter_async_context(early_writeback(fd, job_id))
        await qemu_img.convert(
            overlay.path,
            "qcow2",
            tmp,
            fmt,
            compress=compression is not None,
            progress=progress,
            timeout=timeout,
            # zlib is qemu-img's default: its argv stays as it would be without.
            compression_type=compression.value if compression is CompressionType.ZSTD else None,
        )


def account(
    trims: Sequence[TrimResult], source: Sequence[Extent], kept: Sequence[Extent]
) -> dict[str, Any]:
    """The report's ``space_reclaim`` section, with before/after bytes of each file system
    (``kept``: the data after the trim; see :mod:`agent.repair.reclaim`)."""
    for result in trims:
        result.account(source, kept)
    return reclaim_summary(trims, sum(e.length for e in source), sum(e.length for e in kept))


def disabled(reason: str) -> dict[str, Any]:
    """``space_reclaim`` of a job that reclaimed nothing, saying why."""
    return {"enabled": False, "reason": reason}


# --- convert with parameters.sparsify ----------------------------------------------------


async def _trim_every_filesystem(
    disks: Sequence[AttachedDisk], workdir: Path, journal: AttachmentJournal
) -> list[TrimResult]:
    """Mount each partition that holds a file system (read-write, so a journal is replayed
    before its free space is believed), trim it, unmount it."""
    results: list[TrimResult] = []
    for partition in (p for disk in disks for p in disk.partitions):
        name = f"partition {partition.number}"
        if partition.fstype not in TRIMMABLE:
            what = partition.fstype or "no file system"
            results.append(TrimResult(name, partition, "skipped", f"holds {what}: kept as is"))
            continue
        target = workdir / f"fs-{partition.number}"
        target.mkdir(exist_ok=True)
        try:
            async with mounted(
                partition.device,
                target,
                journal,
                fstype=partition.fstype,
                options=mount_options(partition.fstype, read_only=False),
            ):
                fs = MountedFilesystem(name, target, partition)
                results += await trim_filesystems([fs], overlay_disks={partition.disk})
        except ToolFailed as exc:
            results.append(TrimResult(name, partition, "skipped", f"not mounted: {exc}"))
        finally:
            with contextlib.suppress(OSError):
                target.rmdir()
    return results


async def convert_sparsified(
    ctx: JobContext,
    source: CheckedInput,
    target: Path,
    fmt: str,
    compression: CompressionType | None,
    started: float,
) -> OpResult:
    """A convert job with ``parameters.sparsify``: overlay, trim, one copy pass, publish.

    Called by the convert operation inside its pin of the source, after its checks of the
    target. Progress: "attach", "trim", "convert", "finalize".

    Raises:
        CapabilityMissing: the node cannot mount, loop or FUSE-export.
        ToolFailed: a tool failed; nothing appears at ``target``.
    """
    await require_mount_capability()
    timeout = ctx.spec.execution_policy.timeout_seconds + TOOL_TIMEOUT_MARGIN
    total = source.info.virtual_size
    workdir = ctx.scratch_dir / f"sparsify-{ctx.job_id}"
    workdir.mkdir(parents=True, exist_ok=True)
    journal = AttachmentJournal(ctx.state_dir, ctx.job_id)
    async with (
        source_data(source) as before,
        overlay_over(source.tool_path, source.info.format, total, workdir, journal) as overlay,
    ):
        ctx.progress.report("attach", 3, message="attaching the source beneath an overlay")
        own = DiskImage(overlay.path, "qcow2", True, discard=True)
        async with attached_disks([own], workdir, journal, timeout=timeout) as disks:
            ctx.progress.report("trim", 8, message="discarding the guest's free space")
            trims = await _trim_every_filesystem(disks, workdir, journal)

        def on_progress(percent: float) -> None:
            ctx.progress.report(
                "convert",
                10 + percent * 0.88,
                bytes_done=int(total * percent / 100),
                bytes_total=total,
            )

        ctx.progress.report("convert", 10, bytes_total=total, message=f"overlay -> {fmt}")
        async with kept_data(overlay, before) as kept:
            with (
                atomic_output(target, ctx.job_id, ctx.state_dir) as output,
                pinned_output(ctx.policy, output.tmp) as tmp,
            ):
                await copy_out(
                    overlay,
                    tmp.tool_path,
                    fmt,
                    compression,
                    on_progress,
                    job_id=ctx.job_id,
                    timeout=timeout,
                    fd=tmp.fd,
                )
                reclaim = account(trims, *(await kept()))
                ctx.progress.report("finalize", 98, bytes_done=total, bytes_total=total)
                output.commit()
    with contextlib.suppress(OSError):
        workdir.rmdir()
    stat = target.stat()
    took = max(time.monotonic() - started, 1e-6)
    return OpResult(
        outputs=[Output(kind="image", path=target, size_bytes=stat.st_size, format=fmt)],
        metrics={
            "duration_seconds": round(took, 3),
            "virtual_size_bytes": total,
            "output_bytes": stat.st_blocks * 512,
            "throughput_bytes_per_second": int(total / took),
            "compressed": compression is not None,
            "reclaimed_bytes": reclaim["reclaimed_bytes"],
        },
        details={"space_reclaim": reclaim},
    )
