"""Memory: control-plane RSS with many finished jobs and agents stored; agent RSS.

Through a wave (bar 6 of issue 17) it is ``python -m bench.wave --prefill-finished N``: each
run is made on an empty store and on one holding N finished jobs (:mod:`bench.prefill`), the
control plane's RSS sampled by :class:`RssSampler` from its start to the wave's end and
reported by :func:`print_wave_rss`.

Control plane: ``--jobs`` finished jobs (submitted, then cancelled, with a result and three
history rows each) and ``--agents`` agents are written through the store API, then a real
h2k-controlplane starts on that database; RSS is read after start and after ListJobs (a full
page of 1,000) and ListAgents. Agent: a real h2k-agent, RSS idle and sampled every 20 ms
while it runs a convert job (its qemu-img child is reported separately).

    python -m bench.memory [--jobs 100000] [--agents 100] [--image-gib 1]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.common import (
    capabilities,
    child_rss_mib,
    controlplane_process,
    machine_line,
    print_table,
    rss_mib,
    verdict,
)
from bench.convert import build_source
from controlplane.models import AgentRecord
from controlplane.store import SqliteStore
from devsupport.cluster import running_cluster
from devsupport.specs import job_spec
from protocol.conversion import spec_from_proto, utcnow
from protocol.gen.h2k.v1 import services_pb2, services_pb2_grpc
from protocol.states import JobState

CP_BAR_MB = 200.0
AGENT_BAR_MB = 100.0
WAVE_CP_BAR_MB = 300.0  # issue 17, bar 6: through the wave, 1,000,000 finished jobs stored
CHUNK = 1000
SAMPLE_SECONDS = 0.5


@dataclass
class RssSampler:
    """VmRSS of the processes ``pids()`` names, every ``period`` s, in a thread.

    ``with RssSampler(lambda: [pid]) as rss:`` samples from before the processes start (an
    empty list is skipped) until the block ends; each sample is the largest RSS of them.
    """

    pids: Callable[[], Sequence[int]]
    period: float = SAMPLE_SECONDS
    samples: list[tuple[float, float]] = field(default_factory=list)  # (time.time(), MiB)
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._done.is_set():
            sizes = []
            for pid in self.pids():
                try:
                    sizes.append(rss_mib(pid))
                except OSError:  # it ended meanwhile
                    continue
            if sizes:
                self.samples.append((time.time(), max(sizes)))
            self._done.wait(self.period)  # the sampling period

    def between(self, start: float, end: float) -> list[float]:
        return [mib for at, mib in self.samples if start <= at <= end]


@dataclass(frozen=True)
class WaveRss:
    """A wave run's control-plane RSS: after start-up, over the wave, its peak (MiB)."""

    prefilled: int  # finished jobs in the store before the control plane started
    startup_seconds: float  # launch -> serving
    after_start: float
    wave_median: float
    peak: float  # from launch to the wave's end
    samples: int

    @classmethod
    def of(
        cls, rss: RssSampler, prefilled: int, startup: float, wave: tuple[float, float]
    ) -> WaveRss:
        start, end = wave
        through = [mib for at, mib in rss.samples if at <= end]
        during = rss.between(start, end)
        return cls(
            prefilled=prefilled,
            startup_seconds=startup,
            after_start=through[0] if through else float("nan"),
            wave_median=statistics.median(during) if during else float("nan"),
            peak=max(through, default=float("nan")),
            samples=len(through),
        )


def print_wave_rss(results: Sequence[Any]) -> bool:
    """The RSS table of bench.wave's runs (each with ``tls`` and ``rss``: a WaveRss)."""
    rows = [
        [
            "on" if r.tls else "off",
            f"{r.rss.prefilled:,}",
            f"{r.rss.startup_seconds:.2f}",
            r.rss.after_start,
            r.rss.wave_median,
            r.rss.peak,
            r.rss.samples,
        ]
        for r in results
        if r.rss is not None
    ]
    print_table(
        f"control-plane RSS MiB, sampled every {SAMPLE_SECONDS:g} s from launch to the wave's end",
        ["TLS", "finished jobs stored", "start-up s", "first sample", "wave median", "peak", "n"],
        rows,
    )
    ok = True
    for r in results:
        if r.rss is not None and r.rss.prefilled:
            passed = r.rss.peak < WAVE_CP_BAR_MB
            ok &= passed
            print(
                f"bar: control plane < {WAVE_CP_BAR_MB:g} MB RSS through the wave with "
                f"{r.rss.prefilled:,} finished jobs (TLS {'on' if r.tls else 'off'}, peak "
                f"{r.rss.peak:.0f} MiB): {verdict(passed)}"
            )
    return ok


async def fill(db: Path, jobs: int, agents: int) -> None:
    """Finished jobs and registered agents, written through the store API."""
    from bench.common import spec_message

    store = SqliteStore(db)
    await store.open()
    try:
        for start in range(0, jobs, CHUNK):
            ids = [f"done-{i:06d}" for i in range(start, min(jobs, start + CHUNK))]
            now = utcnow()
            specs = [spec_from_proto(spec_message(job_id)) for job_id in ids]
            await asyncio.gather(*(store.create_job(s, now) for s in specs))
            await asyncio.gather(
                *(
                    store.transition(
                        job_id,
                        JobState.CANCELLED,
                        "cancelled on request",
                        result={"error": {"code": "CANCELLED", "message": "bench"}},
                        error="bench",
                        finished_at=now,
                    )
                    for job_id in ids
                )
            )
        now = utcnow()
        for i in range(agents):
            await store.upsert_agent(
                AgentRecord(
                    name=f"node-{i:03d}",
                    address=f"127.0.0.1:{20000 + i}",
                    capabilities=capabilities(),
                    max_concurrent_jobs=4,
                    registered_at=now,
                    last_heartbeat=now,
                    version="bench",
                )
            )
    finally:
        await store.close()


def controlplane_rss(args: argparse.Namespace, work: Path) -> dict[str, float]:
    db = work / "filled.db"
    began = time.monotonic()
    asyncio.run(fill(db, args.jobs, args.agents))
    filled = time.monotonic() - began
    with controlplane_process(work / "cp", db=db) as (cluster, proc):
        assert proc.popen is not None
        pid = proc.popen.pid
        started = rss_mib(pid)
        with grpc.insecure_channel(cluster.address) as channel:
            jobs = services_pb2_grpc.JobServiceStub(channel)
            registry = services_pb2_grpc.AgentRegistryStub(channel)
            page = jobs.ListJobs(services_pb2.ListJobsRequest(page_size=1000))
            listed = registry.ListAgents(services_pb2.ListAgentsRequest())
            assert len(page.jobs) == min(1000, args.jobs) and len(listed.agents) == args.agents
        after = rss_mib(pid)
    return {"fill_s": filled, "started": started, "after_lists": after}


def agent_rss(args: argparse.Namespace, work: Path) -> dict[str, float]:
    with running_cluster(work / "agent") as cluster:
        proc = cluster.agents["node-1"]
        assert proc.popen is not None
        pid = proc.popen.pid
        idle = rss_mib(pid)
        src = build_source(
            cluster.input_dir, int(args.image_gib * (1 << 30)), 0.4, "monolithicSparse"
        )
        peak, child_peak = idle, 0.0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, child_peak
            while not done.is_set():
                peak = max(peak, rss_mib(pid))
                child_peak = max(child_peak, child_rss_mib(pid))
                done.wait(0.02)  # the sampling period

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            doc = job_spec(
                image=src, output=cluster.output_dir, parameters={"output_format": "qcow2"}
            )
            cluster.h2kctl(
                "submit", str(cluster.write_job(doc)), "--watch", check=True, timeout=900
            )
        finally:
            done.set()
            sampler.join()
        return {"idle": idle, "peak": peak, "qemu_img_peak": child_peak}


def report(cp: dict[str, float], agent: dict[str, float], args: argparse.Namespace) -> bool:
    rows = [
        [
            f"control plane, {args.jobs} finished jobs + {args.agents} agents, after start",
            cp["started"],
        ],
        ["control plane, after ListJobs (1,000) + ListAgents", cp["after_lists"]],
        ["agent, idle", agent["idle"]],
        [f"agent, peak during a {args.image_gib:g} GiB convert job", agent["peak"]],
        ["(its qemu-img child, peak, not the agent's)", agent["qemu_img_peak"]],
    ]
    print_table(
        f"memory (RSS MiB); store filled in {cp['fill_s']:.0f} s; {machine_line()}",
        ["process", "RSS MiB"],
        rows,
    )
    cp_ok = max(cp["started"], cp["after_lists"]) < CP_BAR_MB
    agent_ok = max(agent["idle"], agent["peak"]) < AGENT_BAR_MB
    print(f"bar: control plane < {CP_BAR_MB:g} MB: {verdict(cp_ok)}")
    print(f"bar: agent < {AGENT_BAR_MB:g} MB: {verdict(agent_ok)}")
    return cp_ok and agent_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--image-gib", type=float, default=1.0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    work = Path(tempfile.mkdtemp(prefix="h2k-bench-memory-"))
    try:
        cp = controlplane_rss(args, work)
        agent = agent_rss(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(cp, agent, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
