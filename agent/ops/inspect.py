"""The inspect operation: image metadata and partition table, as a JSON document.

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
from agent.disk.partitions import read_partition_table
from agent.disk.qemu_img import ImageInfo
from agent.errors import InvalidSpec
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


async def run_inspect(ctx: JobContext) -> OpResult:
    """Inspect the input image; see the module docstring."""
    started = time.monotonic()
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
