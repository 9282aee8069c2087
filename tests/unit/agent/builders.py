"""Builders for agent tests: allowed directories, guest-disk images, job specs, an executor.

The fixtures that use them live in conftest.py.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.events import EventLog
from agent.executor import Executor
from agent.paths import PathPolicy
from protocol.conversion import spec_to_proto
from protocol.gen.h2k.v1 import job_pb2, services_pb2
from protocol.spec import parse_spec

MiB = 1024 * 1024


@dataclass
class AgentDirs:
    input: Path
    output: Path
    state: Path

    @property
    def policy(self) -> PathPolicy:
        return PathPolicy([self.input], [self.output])


def make_dirs(root: Path) -> AgentDirs:
    result = AgentDirs(root / "input", root / "output", root / "state")
    for path in (result.input, result.output, result.state):
        path.mkdir()
    return result


def make_disk(
    path: Path, fmt: str = "vmdk", size: str = "64M", writes: tuple[str, ...] = ("0xab 0 4M",)
) -> Path:
    """A guest disk built with qemu-img and filled with qemu-io pattern writes."""
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
    for write in writes:
        pattern, offset, length = write.split()
        subprocess.run(
            ["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} {length}", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def make_gpt_disk(path: Path, fmt: str = "vmdk") -> Path:
    """A 64 MiB disk with a GPT label and two Linux partitions."""
    raw = path.with_suffix(".gpt-raw")
    with raw.open("wb") as handle:
        handle.truncate(64 * MiB)
    subprocess.run(["sfdisk", "-q", str(raw)], input=b"label: gpt\n,20M,L\n,,L\n", check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(path)], check=True)
    raw.unlink()
    return path


def images_identical(a: Path, fmt_a: str, b: Path, fmt_b: str) -> bool:
    done = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", fmt_a, "-F", fmt_b, str(a), str(b)], check=False
    )
    return done.returncode == 0


def job_spec(
    dirs: AgentDirs,
    image: Path | str,
    *,
    operation: str = "convert",
    job_id: str = "job-1",
    fmt: str | None = "vmdk",
    parameters: dict[str, Any] | None = None,
    output: Path | str | None = None,
) -> job_pb2.JobSpec:
    image_doc: dict[str, Any] = {"path": str(image)}
    if fmt is not None:
        image_doc["format"] = fmt
    doc = {
        "job_id": job_id,
        "operation": operation,
        "image": image_doc,
        "artifacts": {"output_path": str(output or dirs.output)},
        "audit": {"requested_by": "tests"},
        "parameters": parameters or {},
    }
    return spec_to_proto(parse_spec(doc))


def new_executor(dirs: AgentDirs, max_jobs: int = 2) -> Executor:
    return Executor(
        node_name="node-test",
        policy=dirs.policy,
        event_log=EventLog(dirs.state),
        state_dir=dirs.state,
        max_concurrent_jobs=max_jobs,
    )


async def run_job(
    executor: Executor,
    spec: job_pb2.JobSpec,
    *,
    start_seq: int = 1,
    on_event: Callable[[job_pb2.ProgressEvent], None] | None = None,
) -> list[job_pb2.ProgressEvent]:
    """Start a job and collect its events up to the terminal one."""
    request = services_pb2.ExecuteJobRequest(spec=spec, attempt=1, start_seq=start_seq)
    events = []
    async with asyncio.timeout(60):
        async for event in executor.start(request):
            events.append(event)
            if on_event is not None:
                on_event(event)
    return events
