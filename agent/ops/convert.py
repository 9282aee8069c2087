"""The convert operation: the input image as qcow2 or raw, written atomically.

Output: ``<output_path>/<input stem>.<output_format>``. It is refused when it already exists
(unless ``parameters.overwrite`` is true) or when it would be the input itself. Progress:
"inspect" 0-2 %, "convert" 2-98 % (qemu-img's percentage), "finalize" 98-100 %.
"""

from __future__ import annotations

import time
from pathlib import Path

from agent.disk import qemu_img
from agent.disk.atomic import atomic_output
from agent.errors import OutputExists
from agent.ops.base import JobContext, OpResult, Output
from agent.ops.image import inspect_input

CONVERT_START = 2.0
CONVERT_END = 98.0
# The job's own timeout (enforced by the executor) is what should fire; this is a backstop.
TOOL_TIMEOUT_MARGIN = 120.0


def output_path(ctx: JobContext, output_format: str) -> Path:
    return ctx.output_dir / f"{ctx.input_path.stem}.{output_format}"


def _check_target(ctx: JobContext, target: Path) -> None:
    ctx.policy.check_output_file(target, ctx.input_path)
    if target.exists() and ctx.spec.parameters.get("overwrite") is not True:
        raise OutputExists(
            f"artifacts.output_path: {target} already exists "
            "(set parameters.overwrite to true to replace it)",
            phase="inspect",
        )


async def run_convert(ctx: JobContext) -> OpResult:
    """Convert the input image; see the module docstring."""
    started = time.monotonic()
    params = ctx.spec.convert_parameters()
    fmt = params.output_format.value
    compress = params.effective_compress
    ctx.progress.report("inspect", 0, message=f"reading metadata of {ctx.input_path}")
    info = await inspect_input(ctx)
    target = output_path(ctx, fmt)
    _check_target(ctx, target)
    total = info.virtual_size
    ctx.progress.report(
        "convert", CONVERT_START, bytes_total=total, message=f"{info.format} -> {fmt}"
    )

    def on_progress(percent: float) -> None:
        ctx.progress.report(
            "convert",
            CONVERT_START + percent * (CONVERT_END - CONVERT_START) / 100,
            bytes_done=int(total * percent / 100),
            bytes_total=total,
        )

    timeout = ctx.spec.execution_policy.timeout_seconds + TOOL_TIMEOUT_MARGIN
    with atomic_output(target, ctx.job_id, ctx.state_dir) as output:
        await qemu_img.convert(
            ctx.input_path,
            info.format,
            output.tmp,
            fmt,
            compress=compress,
            progress=on_progress,
            timeout=timeout,
        )
        ctx.progress.report(
            "finalize", CONVERT_END, bytes_done=total, bytes_total=total, message="syncing"
        )
        output.commit()
    return _result(target, fmt, total, compress, time.monotonic() - started)


def _result(target: Path, fmt: str, virtual_size: int, compress: bool, took: float) -> OpResult:
    stat = target.stat()
    allocated = stat.st_blocks * 512
    duration = max(took, 1e-6)
    return OpResult(
        outputs=[Output(kind="image", path=target, size_bytes=stat.st_size, format=fmt)],
        metrics={
            "duration_seconds": round(took, 3),
            "virtual_size_bytes": virtual_size,
            "output_bytes": allocated,
            "throughput_bytes_per_second": int(virtual_size / duration),
            "compressed": compress,
        },
    )
