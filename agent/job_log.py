"""``artifacts.log_upload``: the job's own log, published beside its outputs.

``<output_path>/<job_id>.log.jsonl``, one JSON object a line: every event of the attempt so far
(``{"type": "event", ...}``, as streamed), every external command it ran with the tail of its
stderr (``{"type": "tool", ...}``), and how the attempt ended (``{"type": "outcome", ...}``).
It is written atomically (a new temporary name, never through a symlink, fsync, rename) and
replaces the log of an earlier attempt of the same job. A completed job lists it in its
outputs (kind ``log``); a failed one too, when it could be written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from agent.disk.atomic import temporary_name
from agent.disk.output_dir import opened_output_dir
from agent.ops.base import JobContext, Output
from agent.proc import ToolRun
from protocol.gen.h2k.v1 import job_pb2

LOG_SUFFIX = ".log.jsonl"


def log_name(job_id: str) -> str:
    return f"{job_id}{LOG_SUFFIX}"


def log_lines(
    events: Sequence[job_pb2.ProgressEvent], tools: Sequence[ToolRun], outcome: dict[str, Any]
) -> bytes:
    """The log's bytes: events, then tools, then the outcome."""
    lines = [
        {"type": "event", **json_format.MessageToDict(e, preserving_proto_field_name=True)}
        for e in events
    ]
    lines += [
        {
            "type": "tool",
            "argv": run.argv,
            "exit_code": run.exit_code,
            "seconds": run.seconds,
            "stderr_tail": run.stderr_tail,
        }
        for run in tools
    ]
    lines.append({"type": "outcome", **outcome})
    return b"".join(json.dumps(line, sort_keys=True).encode() + b"\n" for line in lines)


def publish_log(ctx: JobContext, data: bytes, digest: str) -> Output:
    """Write the log into the job's output directory atomically; the :class:`Output`.

    Raises:
        PathNotAllowed: the log's path is not one the agent may write.
        OSError: the file system refused.
    """
    name = log_name(ctx.job_id)
    target = ctx.output_dir / name
    ctx.policy.check_output_file(target, ctx.input_path)
    with opened_output_dir(ctx.policy, ctx.output_dir) as out:
        out.write_atomically(name, data, temporary_name(Path(name), ctx.job_id).name)
    return Output(kind="log", path=target, size_bytes=len(data), format="jsonl", sha256=digest)
