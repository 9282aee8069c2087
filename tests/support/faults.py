"""Helpers for fault-injection scenarios: a cluster with short timings, polls, evidence.

Shared by the reliability and HA tests and by ``bench/soak.py`` (which loops the same
scenarios).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from agent.events import EventLog
from client import H2KClient
from devsupport.cluster import Cluster, wait_for
from devsupport.specs import job_spec
from protocol.gen.h2k.v1 import job_pb2

MiB = 1 << 20
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")

# Short timings so that faults resolve in seconds: heartbeat 1 s and lease 5 s come from
# Cluster; retries wait 0.5 s, 1 s, ...; the deadline backstop has a 5 s margin.
CONTROLPLANE_ARGS = ("--retry-backoff-seconds", "0.5", "--timeout-margin-seconds", "5")


def state(job: job_pb2.Job) -> str:
    return job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")


@dataclass
class FaultCluster(Cluster):
    """A :class:`Cluster` with a Python client and the checks fault scenarios need."""

    _client: H2KClient | None = field(default=None, init=False, repr=False)

    def start_controlplane(self, *extra: str) -> Any:
        return super().start_controlplane(*(extra or CONTROLPLANE_ARGS))

    @property
    def api(self) -> H2KClient:
        if self._client is None:
            self._client = H2KClient(self.address, insecure=True, timeout=10)
        return self._client

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        super().stop()

    # --- jobs ---------------------------------------------------------------------------

    def convert_spec(
        self, job_id: str, *, source: str = "slow.img", output: Path | None = None, **policy: Any
    ) -> dict[str, Any]:
        """A compressed qcow2 conversion of ``input/<source>`` with an execution policy."""
        out = output or self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        return job_spec(
            image=self.input_dir / source,
            image_format="raw",
            output=out,
            job_id=job_id,
            parameters={"output_format": "qcow2", "compress": True},
            execution_policy={"retry_count": 0, "timeout_seconds": 3600, **policy},
        )

    def submit(self, doc: dict[str, Any]) -> None:
        self.api.submit(doc)

    def job(self, job_id: str) -> job_pb2.Job:
        return self.api.get(job_id)

    def wait_state(self, job_id: str, *states: str, timeout: float = 60) -> job_pb2.Job:
        """Poll until the job is in one of ``states``; fails early on another terminal one."""

        def check() -> job_pb2.Job | None:
            job = self.job(job_id)
            now = state(job)
            if now in states:
                return job
            assert now not in TERMINAL, f"{job_id} ended {now}: {job.result.error.message}"
            return None

        return wait_for(check, timeout=timeout, interval=0.1, what=f"{job_id} in {states}")

    def wait_progress(self, job_id: str, percent: float, timeout: float = 60) -> job_pb2.Job:
        def check() -> job_pb2.Job | None:
            job = self.job(job_id)
            assert state(job) not in TERMINAL, f"{job_id} ended {state(job)} too early"
            return job if job.progress_percent >= percent else None

        return wait_for(check, timeout=timeout, interval=0.05, what=f"{job_id} at {percent}%")

    def stored_seqs(self, job_id: str) -> list[int]:
        return [e.seq for e in self.api.events(job_id)]

    def agent_log(self, agent: str, job_id: str) -> list[job_pb2.ProgressEvent]:
        """The agent's own event log of the job's current attempt."""
        return EventLog(self.workdir / agent).read_after(job_id, 0)


def assert_gap_free(seqs: list[int], what: str = "") -> None:
    assert seqs == list(range(1, len(seqs) + 1)), f"{what} seqs not 1..N: {seqs}"


def temporary_files(directory: Path) -> list[str]:
    """Hidden or temporary files an interrupted conversion would leave."""
    return sorted(p.name for p in directory.rglob("*") if ".h2k-tmp-" in p.name)


def tools_writing_to(directory: Path) -> list[int]:
    """Pids of qemu-img processes with ``directory`` in their command line."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if cmd and "qemu-img" in os.path.basename(cmd[0]) and any(str(directory) in a for a in cmd):
            found.append(proc.pid)
    return found


def wait_clean(directory: Path, timeout: float = 20) -> None:
    """Wait until no temporary file and no tool writing remains under ``directory``."""
    wait_for(
        lambda: not temporary_files(directory) and not tools_writing_to(directory),
        timeout=timeout,
        what=f"no temporary file or qemu-img under {directory}",
    )


def history(job: job_pb2.Job) -> list[tuple[str, str, int]]:
    """(to_state, reason, attempt) of every transition."""
    return [
        (job_pb2.JobState.Name(t.to_state).removeprefix("JOB_STATE_"), t.reason, t.attempt)
        for t in job.history
    ]


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


def job_ids(prefix: str, count: int) -> Iterable[str]:
    return (f"{prefix}-{i:04d}" for i in range(count))
