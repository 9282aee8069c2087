"""The inspect operation: image metadata and partition table, as a JSON document.

With ``parameters.guest_info: true`` it also describes the guest (:mod:`agent.guest`): the
image is attached read-only (a read-only FUSE export and read-only loop devices), its file
systems mounted read-only without journal replay, and everything is released on every way out
(recorded in the attachment journal, so a crashed agent releases it when it starts again).

Writes ``<output_path>/<job_id>_inspection.json`` atomically and returns the same document in
the result's details.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from agent.disk.atomic import atomic_output
from agent.disk.attach import DiskImage
from agent.disk.journal import AttachmentJournal
from agent.disk.partitions import read_partition_table
from agent.disk.qemu_img import ImageInfo
from agent.errors import InvalidSpec
from agent.guest.inspection import inspect_disks
from agent.ops.base import JobContext, OpResult, Output
from agent.ops.image import checked_input
from agent.paths import pinned_output


def inspection_document(ctx: JobContext, info: ImageInfo) -> dict[str, Any]:
    return {
        "job_id": ctx.job_id,
        "image": str(ctx.input_path),
        "format": info.format,
        "virtual_size": info.virtual_size,
        "actual_size": info.actual_size,
        "cluster_size": info.cluster_size,
        "dirty_flag": info.dirty_flag,
        "encrypted": bool(info.raw.get("encrypted", False)),
        "format_specific": info.format_specific,
        "partition_table": None,
    }


GUEST_INFO = "guest_info"
TOOL_TIMEOUT_MARGIN = 120.0
GUEST_PERCENT = {"attach": 55, "mount": 65, "guest": 75, "detach": 85}


def wants_guest_info(ctx: JobContext) -> bool:
    """``parameters.guest_info`` (default false).

    Raises:
        InvalidSpec: it is not a boolean.
    """
    value = ctx.spec.parameters.get(GUEST_INFO, False)
    if not isinstance(value, bool):
        raise InvalidSpec(f"parameters.{GUEST_INFO}: must be true or false", phase="validate")
    return value


async def _inspect_guest(ctx: JobContext, disk: DiskImage) -> dict[str, Any]:
    def step(phase: str, message: str) -> None:
        ctx.progress.report(phase, GUEST_PERCENT[phase], message=message)

    return await inspect_disks(
        [disk],
        ctx.scratch_dir / f"inspect-{ctx.job_id}",
        AttachmentJournal(ctx.state_dir, ctx.job_id),
        timeout=ctx.spec.execution_policy.timeout_seconds + TOOL_TIMEOUT_MARGIN,
        step=step,
    )


async def run_inspect(ctx: JobContext) -> OpResult:
    """Inspect the input image; see the module docstring."""
    started = time.monotonic()
    guest_info = wants_guest_info(ctx)
    ctx.progress.report("inspect", 5, message=f"reading metadata of {ctx.input_path}")
    async with checked_input(ctx) as source:
        info = source.info
        document = inspection_document(ctx, info)
        # How the source was proved whole: its metadata, image.size_bytes, or "not verified".
        document["source_size_check"] = source.size_check
        image = source.tool_path
        if not isinstance(image, Path):  # a byte range; checked_input refuses it for inspect
            raise InvalidSpec("parameters.migration: inspect reads whole files only")
        ctx.progress.report("partitions", 50, message="reading the partition table")
        table = await read_partition_table(image, info.format, info.virtual_size, ctx.scratch_dir)
        if guest_info:
            disk = DiskImage(image, info.format, writable=False, shown=ctx.input_path)
            document.update(await _inspect_guest(ctx, disk))
    # sfdisk saw the pinned /proc path; name the image the job gave.
    document["partition_table"] = table.table and {**table.table, "device": str(ctx.input_path)}
    if table.table is None:
        document["partition_table_error"] = table.reason
    ctx.progress.report("finalize", 90, message="writing the inspection report")
    target = ctx.output_dir / f"{ctx.job_id}_inspection.json"
    ctx.policy.check_output_file(target, ctx.input_path)
    data = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
    # Created new (O_EXCL, O_NOFOLLOW): a symlink planted at the temporary name is refused.
    with (
        atomic_output(target, ctx.job_id, ctx.state_dir) as output,
        pinned_output(ctx.policy, output.tmp) as tmp,
    ):
        with os.fdopen(os.dup(tmp.fd), "wb") as file:
            file.write(data)
        output.commit()
    return OpResult(
        outputs=[Output(kind="inspection", path=target, size_bytes=len(data), format="json")],
        metrics={"duration_seconds": round(time.monotonic() - started, 3)},
        details=document,
    )
