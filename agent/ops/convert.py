"""The convert operation: the input image as qcow2 or raw, written atomically.

Output: ``<output_path>/<input stem>.<output_format>``, or ``<output_path>/<output_name>`` for
a migration's disk job (``parameters.migration.output_name``). It is refused when it already
exists (unless ``parameters.overwrite`` is true) or when it would be the input itself.
Progress: "inspect" 0-2 %, "convert" 2-98 % (qemu-img's percentage), "finalize" 98-100 %.

Every output is published with its sha256 (hashed from the page cache right after the write)
and a record of the job, attempt and node that wrote it (:class:`agent.disk.atomic.
OutputRecord`). A retry that finds the output a previous attempt of the same job published
(the agent was lost after the rename, say) checks the record and hashes the file again; when
both agree the job completes with that output instead of failing with OUTPUT_EXISTS.

With ``parameters.migration.verify_content`` the written temporary file is compared with the
source (``qemu-img compare``) before it is renamed into place: "convert" 2-60 %, "verify"
60-98 %. A difference fails the job and nothing appears at the final path.

Compressed qcow2 uses zlib unless ``parameters.compression_type`` is ``zstd``: zstd is 4-10x
faster (measured in bench/convert.py) but only qemu >= 5.1 built with zstd can open such an
image, and a migration's output must open wherever it is taken, so the faster one is asked for.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from agent.disk import qemu_img
from agent.disk.atomic import (
    AtomicOutput,
    OutputRecord,
    atomic_output,
    attach_record,
    proven_output,
)
from agent.disk.digest import sha256_of_fd
from agent.disk.space import check_space, required_bytes
from agent.disk.writeback import drop_cached, early_writeback
from agent.errors import CapabilityMissing, OutputExists
from agent.ops.base import JobContext, OpResult, Output
from agent.ops.disk_job import migration_parameters
from agent.ops.image import CheckedInput, checked_input
from agent.ops.sparsify import convert_sparsified, convert_sparsify_requested
from agent.paths import PinnedFile, pinned_output
from protocol.spec import CompressionType
from runtime.tracing import tracer

CONVERT_START = 2.0
CONVERT_END = 98.0
VERIFY_START = 60.0  # where "convert" ends and "verify" starts when the output is verified
# The job's own timeout (enforced by the executor) is what should fire; this is a backstop.
TOOL_TIMEOUT_MARGIN = 120.0
_TRACER = tracer(__name__)


def output_path(ctx: JobContext, output_format: str) -> Path:
    """Where the job's image goes: ``parameters.migration.output_name`` when given, else
    ``<input stem>.<output_format>``, in the output directory.

    Raises:
        InvalidSpec: ``parameters.migration`` is invalid for this operation.
    """
    migration = migration_parameters(ctx)
    if migration is not None:
        return ctx.output_dir / migration.output_name
    return ctx.output_dir / f"{ctx.input_path.stem}.{output_format}"


def _check_target(ctx: JobContext, target: Path) -> None:
    """Refuse an existing output (the repair operations' check, which keeps no record).

    Raises:
        OutputExists: it exists and ``parameters.overwrite`` is not true.
    """
    ctx.policy.check_output_file(target, ctx.input_path)
    if target.exists() and ctx.spec.parameters.get("overwrite") is not True:
        raise OutputExists(
            f"artifacts.output_path: {target} already exists "
            "(set parameters.overwrite to true to replace it)",
            phase="inspect",
        )


async def _check_new_target(ctx: JobContext, target: Path) -> OutputRecord | None:
    """Refuse an existing output, unless an earlier attempt of this job published it.

    Returns:
        The record of the earlier attempt's output when it is proven (see the module
        docstring), else None: the output is to be written.

    Raises:
        OutputExists: it exists and is not proven to be this job's.
    """
    ctx.policy.check_output_file(target, ctx.input_path)
    if not os.path.lexists(target) or ctx.spec.parameters.get("overwrite") is True:
        return None
    record, why_not = await proven_output(target, ctx.job_id, ctx.spec_sha256)
    if record is not None:
        return record
    raise OutputExists(
        f"artifacts.output_path: {target} already exists and is not an output of an earlier "
        f"attempt of this job ({why_not}); set parameters.overwrite to true to replace it",
        phase="inspect",
    )


async def check_compression(ctx: JobContext, kind: CompressionType | None) -> None:
    """zlib works with every qemu-img; zstd needs one built with it (checked once).

    Raises:
        CapabilityMissing: this agent's qemu-img cannot write that compression type.
    """
    if kind is None or kind is CompressionType.ZLIB:
        return
    if not await qemu_img.supports_compression_type(kind.value, ctx.scratch_dir):
        raise CapabilityMissing(
            f"parameters.compression_type: this agent's qemu-img cannot write {kind.value}-"
            "compressed qcow2 (it needs qemu >= 5.1 built with zstd); use zlib or another agent",
            phase="inspect",
        )


async def run_convert(ctx: JobContext) -> OpResult:
    """Convert the input image; see the module docstring."""
    started = time.monotonic()
    params = ctx.spec.convert_parameters()
    fmt = params.output_format.value
    compress = params.effective_compress
    sparsify = convert_sparsify_requested(ctx)  # parameters.sparsify: see agent/ops/sparsify.py
    ctx.progress.report("inspect", 0, message=f"reading metadata of {ctx.input_path}")
    await check_compression(ctx, params.effective_compression_type)
    options = _create_options(params.effective_compression_type)
    needed = 0

    async def measure(source: CheckedInput) -> None:
        nonlocal needed
        needed = await required_bytes(source.tool_path, source.info, fmt, options)

    # qemu-img measure runs while qemu-img check proves the source (one start-up, not two).
    async with checked_input(ctx, alongside_check=measure) as source:
        target = output_path(ctx, fmt)
        earlier = await _check_new_target(ctx, target)
        if earlier is not None:
            return _reused(ctx, target, fmt, earlier, source.info.virtual_size)
        check_space(needed, ctx.output_dir, ctx.input_path)
        if sparsify:
            compression = params.effective_compression_type
            return await convert_sparsified(ctx, source, target, fmt, compression, started)
        digest = await _convert(ctx, source, target, fmt, params.effective_compression_type)
    total = source.info.virtual_size
    result = _result(target, fmt, total, compress, time.monotonic() - started, digest)
    # How the source was proved whole: its own metadata, image.size_bytes, or not at all (raw).
    return OpResult(result.outputs, result.metrics, {"source_size_check": source.size_check})


async def _convert(
    ctx: JobContext,
    source: CheckedInput,
    target: Path,
    fmt: str,
    compression: CompressionType | None,
) -> str:
    """qemu-img convert into a new temporary file, then publish it; returns its sha256.

    qemu-img writes through the pinned temporary file (``/proc/<pid>/fd/<n>``), so a symlink
    planted at the temporary name cannot redirect the write. While it writes, the agent starts
    write-back of what it wrote so far (:mod:`agent.disk.writeback`), so the fsync before the
    rename has little left to do, and the pages stay cached for the sha256 that follows.
    """
    compress = compression is not None
    total = source.info.virtual_size
    migration = migration_parameters(ctx)
    verify = migration is not None and migration.verify_content
    convert_end = VERIFY_START if verify else CONVERT_END
    ctx.progress.report(
        "convert", CONVERT_START, bytes_total=total, message=f"{source.info.format} -> {fmt}"
    )
    on_progress = _progress_between(ctx, "convert", CONVERT_START, convert_end, total)

    timeout = ctx.spec.execution_policy.timeout_seconds + TOOL_TIMEOUT_MARGIN
    with (
        atomic_output(target, ctx.job_id, ctx.state_dir) as output,
        pinned_output(ctx.policy, output.tmp) as tmp,
    ):
        with _TRACER.start_as_current_span(
            "qemu-img convert",
            attributes={
                "h2k.job_id": ctx.job_id,
                "h2k.source_format": source.info.format,
                "h2k.target_format": fmt,
                "h2k.virtual_size_bytes": total,
                "h2k.compress": compress,
            },
        ):
            async with early_writeback(tmp.fd, ctx.job_id):
                await qemu_img.convert(
                    source.tool_path,
                    source.info.format,
                    tmp.tool_path,
                    fmt,
                    compress=compress,
                    progress=on_progress,
                    timeout=timeout,
                    # zlib is qemu-img's default: leave its argv exactly as before then.
                    compression_type=(
                        compression.value if compression is CompressionType.ZSTD else None
                    ),
                    stall_seconds=ctx.stall_seconds,
                )
        if verify:
            await _verify(ctx, source, tmp, fmt, timeout)
        ctx.progress.report(
            "finalize", CONVERT_END, bytes_done=total, bytes_total=total, message="syncing"
        )
        digest, size = await _hash_while_syncing(output, tmp.fd)
        record = OutputRecord(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            node=ctx.node_name,
            spec_sha256=ctx.spec_sha256,
            size_bytes=size,
            sha256=digest,
            mtime_ns=os.fstat(tmp.fd).st_mtime_ns,
        )
        attach_record(tmp.fd, record)
        output.commit()
        drop_cached(tmp.fd)  # hashed and synced: its pages need not fill the page cache
    return digest


async def _hash_while_syncing(output: AtomicOutput, fd: int) -> tuple[str, int]:
    """The sha256 and size of the finished temporary file, hashed while it is fsynced.

    Both wait on the kernel (one reads, one writes back what is still dirty) and release the
    GIL, so they overlap. The commit's own fsync, after the record is attached, stays the one
    durability point before the rename; this one leaves it only the record to write.

    Raises:
        OutOfSpace: the data still in the page cache did not fit.
    """
    hashed, synced = await asyncio.gather(
        sha256_of_fd(fd), asyncio.to_thread(output.sync, fd), return_exceptions=True
    )
    # Both have ended (neither thread still uses ``fd``): only now may a failure propagate.
    for outcome in (synced, hashed):
        if isinstance(outcome, BaseException):
            raise outcome
    assert not isinstance(hashed, BaseException)
    return hashed


def _create_options(compression: CompressionType | None) -> list[str]:
    """The output's creation options as ``qemu-img measure`` is given them."""
    if compression is CompressionType.ZSTD:
        return ["compression_type=zstd"]
    return []


def _progress_between(
    ctx: JobContext, phase: str, start: float, end: float, total: int
) -> qemu_img.ProgressCallback:
    def on_progress(percent: float) -> None:
        ctx.progress.report(
            phase,
            start + percent * (end - start) / 100,
            bytes_done=int(total * percent / 100),
            bytes_total=total,
        )

    return on_progress


async def _verify(
    ctx: JobContext, source: CheckedInput, tmp: PinnedFile, fmt: str, timeout: float
) -> None:
    """Compare the written temporary output with the source, before it is published.

    Raises:
        ToolFailed: the contents differ (the message says where), or qemu-img failed.
    """
    total = source.info.virtual_size
    ctx.progress.report(
        "verify", VERIFY_START, bytes_total=total, message="comparing the output with the source"
    )
    with _TRACER.start_as_current_span(
        "qemu-img compare", attributes={"h2k.job_id": ctx.job_id, "h2k.target_format": fmt}
    ):
        try:
            await qemu_img.compare(
                source.tool_path,
                source.info.format,
                tmp.tool_path,
                fmt,
                progress=_progress_between(ctx, "verify", VERIFY_START, CONVERT_END, total),
                timeout=timeout,
            )
        except qemu_img.ContentMismatch as exc:
            raise qemu_img.ContentMismatch(
                f"parameters.migration.verify_content: {exc.message}; the output was not published",
                phase="verify",
            ) from None


def _reused(
    ctx: JobContext, target: Path, fmt: str, earlier: OutputRecord, virtual_size: int
) -> OpResult:
    message = (
        f"{target} is the complete output attempt {earlier.attempt} of this job published on "
        f"{earlier.node or 'an agent'} (record and sha256 {earlier.sha256} checked); kept"
    )
    ctx.progress.report("finalize", CONVERT_END, message=message)
    image = Output("image", target, earlier.size_bytes, fmt, earlier.sha256)
    return OpResult(
        outputs=[image],
        metrics={"virtual_size_bytes": virtual_size, "reused_from_attempt": earlier.attempt},
    )


def _result(
    target: Path, fmt: str, virtual_size: int, compress: bool, took: float, digest: str
) -> OpResult:
    stat = target.stat()
    allocated = stat.st_blocks * 512
    duration = max(took, 1e-6)
    image = Output(kind="image", path=target, size_bytes=stat.st_size, format=fmt, sha256=digest)
    return OpResult(
        outputs=[image],
        metrics={
            "duration_seconds": round(took, 3),
            "virtual_size_bytes": virtual_size,
            "output_bytes": allocated,
            "throughput_bytes_per_second": int(virtual_size / duration),
            "compressed": compress,
        },
    )
