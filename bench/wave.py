"""A migration wave: thousands of jobs queued at once, a hundred agents busy for minutes.

Bar 1 of issue 17. ``--jobs`` jobs go in through ``SubmitJobs`` (``--batch`` per call) to a
real ``h2k-controlplane`` (or ``--replicas`` of them on PostgreSQL), INFO logging, metrics
and tracing interceptors as shipped, TLS with ``--tls on``. ``--agents`` fake agents with
``--slots`` slots each, in ``--agent-processes`` child processes, speak the real Worker and
AgentRegistry protocol over loopback gRPC (they skip only the disk work): each job reports
RUNNING, a PROGRESSING event every ``--interval`` s for ``--job-seconds``, then COMPLETED.

Measured, side by side with the ideal of the same run:

  makespan      first submit sent -> last job recorded COMPLETED (the store's updated_at),
                against the ideal ceil(jobs / (agents x slots)) x job length
  ingest lag    agent's send stamp -> the event visible in the store, for ``--sampled-jobs``
                jobs spread over the wave (a poller in its own process reads the store every
                ``--poll-ms``); p50 / p99 overall and per tenth of the wave
  watchers      ``--watchers`` clients each follow every sampled job with WatchJobBatches
                from the moment it is submitted; each checks it saw seq 1..N exactly once, in
                order, ending COMPLETED (and the receipt lag)
  correctness   every job COMPLETED, every job's stored events exactly seq 1..N, no job started
                twice on the agents, no agent ever over its slots
  CPU           each replica's, the fake agents' and the whole machine's busy share through
                the wave (with several replicas: is relaying spread, is the machine the limit)

    python -m bench.wave [--jobs 10000 --agents 100 --slots 10 --interval 0.5 --job-seconds 10]
                         [--tls off|on|both] [--store sqlite|postgres] [--replicas 1]
    python -m bench.wave --quick     # seconds; what tests/bench runs
    python -m bench.wave --prefill-finished 1000000   # bar 6: RSS, empty store vs 1M finished
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

from bench import memory, prefill
from bench.common import machine_line, percentile, print_table, spec_message, verdict
from bench.wave_agents import WaveAgents, WavePlan, events_per_job
from devsupport.cluster import Cluster, Process
from devsupport.pki import ClusterPKI
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc

MAKESPAN_BAR = 1.10
LAG_BAR_MS = 250.0
WINDOWS = 10
QUICK = {
    "jobs": 60,
    "agents": 4,
    "slots": 3,
    "interval": 0.1,
    "job_seconds": 0.5,
    "sampled_jobs": 6,
    "watchers": 2,
    "agent_processes": 2,
}


# --- the store, read directly (SQLite file or PostgreSQL) ----------------------------------


class StoreReader:
    """Reads the control plane's store through its own connection (never through h2k)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith("postgresql://")
        self._conn: Any = None

    def __enter__(self) -> StoreReader:
        if self.postgres:
            import psycopg

            self._conn = psycopg.connect(self.url, autocommit=True)
        else:
            path = self.url.removeprefix("sqlite:///")
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            sql = sql.replace("?", "%s")
        return [tuple(r) for r in self._conn.execute(sql, params).fetchall()]

    def events_after(self, positions: dict[str, int]) -> list[tuple[str, int, str]]:
        """(job_id, seq, event JSON) of every stored event past each job's position."""
        if not positions:
            return []
        values = ", ".join(["(?, ?)"] * len(positions))
        params = tuple(x for item in positions.items() for x in item)
        if self.postgres:
            sql = (
                f"SELECT e.job_id, e.seq, e.event FROM job_events e JOIN (VALUES {values}) "
                "AS v(job_id, seq) ON e.job_id = v.job_id AND e.seq > v.seq"
            )
        else:
            sql = (
                f"SELECT e.job_id, e.seq, e.event FROM job_events e JOIN (VALUES {values}) v "
                "ON e.job_id = v.column1 AND e.seq > v.column2"
            )
        return [(str(j), int(s), str(e)) for j, s, e in self._query(sql, params)]

    def finished(self, prefix: str) -> int:
        """The wave's jobs in a terminal state (a failed one ends the wave too: the report
        says it was not all COMPLETED instead of the wave waiting for its timeout)."""
        ended = ("COMPLETED", "FAILED", "CANCELLED")
        return sum(n for state, n in self.states(prefix).items() if state in ended)

    def states(self, prefix: str) -> dict[str, int]:
        found = self._query(
            f"SELECT state, COUNT(*) FROM jobs WHERE {_WAVE_JOBS} GROUP BY state", _range(prefix)
        )
        return {str(s): int(n) for s, n in found}

    def last_update(self, prefix: str) -> float:
        """When the last of the wave's jobs was written (its COMPLETED), as time.time()."""
        found = self._query(f"SELECT MAX(updated_at) FROM jobs WHERE {_WAVE_JOBS}", _range(prefix))
        value = found[0][0]
        when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return when.timestamp()

    def bad_event_runs(self, prefix: str, per_job: int) -> tuple[int, int]:
        """(events stored, jobs whose stored events are not exactly seq 1..per_job)."""
        total = self._query(f"SELECT COUNT(*) FROM job_events WHERE {_WAVE_JOBS}", _range(prefix))
        bad = self._query(
            f"SELECT COUNT(*) FROM (SELECT job_id FROM job_events WHERE {_WAVE_JOBS} "
            "GROUP BY job_id HAVING COUNT(*) != ? OR MIN(seq) != 1 OR MAX(seq) != ?) AS b",
            (*_range(prefix), per_job, per_job),
        )
        return int(total[0][0]), int(bad[0][0])


# The wave's jobs, as a range of the primary key (LIKE would read every stored job).
_WAVE_JOBS = "job_id >= ? AND job_id < ?"


def _range(prefix: str) -> tuple[str, str]:
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _poll_store(url: str, job_ids: list[str], per_job: int, poll: float, conn: Connection) -> None:
    """Child process: agent stamp -> visible in the store, for each sampled job's events."""
    lags: list[tuple[float, float]] = []  # (seen at, lag ms)
    positions = dict.fromkeys(job_ids, 0)
    with StoreReader(url) as reader:
        while not conn.poll():
            found = reader.events_after(positions)
            now = time.time_ns()
            for job_id, seq, body in found:
                positions[job_id] = max(positions[job_id], seq)
                sent = json.loads(body).get("details", {}).get("sent_ns")
                if sent is not None:
                    lags.append((now / 1e9, (now - int(sent)) / 1e6))
            for job_id in [j for j, s in positions.items() if s >= per_job]:
                del positions[job_id]
            time.sleep(poll)  # the polling period itself
    conn.recv()
    conn.send(lags)


@contextlib.contextmanager
def store_poller(url: str, job_ids: list[str], per_job: int, poll: float) -> Iterator[Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    proc = context.Process(target=_poll_store, args=(url, job_ids, per_job, poll, child))
    proc.start()
    result: dict[str, list[tuple[float, float]]] = {}

    def finish() -> list[tuple[float, float]]:
        if "lags" not in result:
            parent.send("stop")
            result["lags"] = parent.recv()
        return result["lags"]

    try:
        yield finish
    finally:
        with contextlib.suppress(OSError, EOFError):
            finish()
        proc.join(10)
        if proc.is_alive():
            proc.kill()


# --- watchers ------------------------------------------------------------------------------


@dataclass
class JobWatch:
    """What one watcher saw of one job."""

    seqs: list[int] = field(default_factory=list)
    last_state: int = 0
    lags_ms: list[float] = field(default_factory=list)
    error: str = ""

    def correct(self, per_job: int) -> bool:
        return (
            self.seqs == list(range(1, per_job + 1))
            and self.last_state == job_pb2.JOB_STATE_COMPLETED
        )


async def watch_job(stub: Any, job_id: str, seen: JobWatch) -> None:
    """Follow one job from its submit on (its SubmitJobs call has committed: the stream
    replays what was stored before it opened, then follows)."""
    try:
        request = services_pb2.WatchJobRequest(job_id=job_id)
        async for batch in stub.WatchJobBatches(request):
            now = time.time_ns()
            for event in batch.events:
                seen.seqs.append(event.seq)
                seen.last_state = event.state
                sent = event.details.get("sent_ns")
                if sent:
                    seen.lags_ms.append((now - int(sent)) / 1e6)
    except grpc.aio.AioRpcError as exc:
        seen.error = f"{exc.code().name}: {exc.details()}"


# --- the control plane(s) ------------------------------------------------------------------


@dataclass
class Deployment:
    """The control plane replicas, their store and (with TLS) the certificates."""

    clusters: list[Cluster]
    db_url: str
    pki: ClusterPKI | None
    startup_seconds: float = 0.0  # the first replica's launch -> serving

    @property
    def addresses(self) -> list[str]:
        return [c.address for c in self.clusters]

    @property
    def processes(self) -> list[Process]:
        return [c.controlplane for c in self.clusters if c.controlplane is not None]

    def channel(self, replica: int = 0) -> grpc.aio.Channel:
        address = self.addresses[replica % len(self.addresses)]
        options = [("grpc.so_reuseport", 0)]
        if self.pki is None:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(address, self.pki.credentials(), options=options)


@contextlib.contextmanager
def deployment(
    work: Path,
    args: argparse.Namespace,
    tls: bool,
    clusters: list[Cluster] | None = None,
    prefilled: int = 0,
) -> Iterator[Deployment]:
    """The control planes on a new store (``prefilled`` finished jobs in it); each started
    one is appended to ``clusters`` as soon as it is launched."""
    server = None
    if args.store == "postgres":
        from tests.support.postgres import started_server  # only PostgreSQL runs need it

        server = started_server()
        db_url = server.create_database("h2k_wave")
    else:
        db_url = f"sqlite:///{work / 'cp' / 'h2k.db'}"
        if prefilled:
            source = prefill.cached_store(prefill.PrefillPlan(prefilled))
            prefill.copy_store(source, work / "cp" / "h2k.db")
    pki = ClusterPKI.create(work / "pki") if tls else None
    extra = (
        "--heartbeat-interval",
        "4",
        "--lease-seconds",
        "15",
        "--max-streams-per-client",
        str(args.watchers * args.sampled_jobs + 100),
    )
    clusters = [] if clusters is None else clusters
    startup = []
    try:
        for replica in range(args.replicas):
            cluster = Cluster(work / f"replica-{replica}")
            cluster.pki, cluster.db_url = pki, db_url
            clusters.append(cluster)
            launched = time.monotonic()
            cluster.start_controlplane(*extra)
            startup.append(time.monotonic() - launched)
        yield Deployment(clusters, db_url, pki, startup[0])
    finally:
        for cluster in clusters:
            cluster.stop()
        if server is not None:
            server.destroy()


# --- one run -------------------------------------------------------------------------------


@dataclass
class WaveResult:
    tls: bool
    makespan: float
    ideal: float
    submit_seconds: float
    lags: list[tuple[float, float]]
    watcher_lags: list[float]
    watches: int
    watches_correct: int
    watch_errors: list[str]
    states: dict[str, int]
    events_stored: int
    bad_event_jobs: int
    started: int
    started_twice: int
    over_slots: int
    cpu_seconds: float
    wave_start: float
    replica_cpu: list[float] = field(default_factory=list)  # CPU-seconds of each replica
    agents_cpu: float = 0.0  # CPU-seconds of the fake agents' processes
    machine_busy: float = 0.0  # share of every CPU of the machine busy during the wave
    rss: memory.WaveRss | None = None


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks


async def _submit(
    dep: Deployment,
    job_ids: list[str],
    batch: int,
    committed: Callable[[list[str]], None],
    callers: int = 4,
) -> None:
    """SubmitJobs of ``batch`` specs each, ``callers`` calls at a time, in job order;
    ``committed`` hears each call's job ids once it has answered."""
    calls = iter(range(0, len(job_ids), batch))
    async with dep.channel() as channel:
        stub = services_pb2_grpc.JobServiceStub(channel)

        async def caller() -> None:
            for start in calls:
                ids = job_ids[start : start + batch]
                specs = [spec_message(j) for j in ids]
                await stub.SubmitJobs(services_pb2.SubmitJobsRequest(specs=specs), timeout=300)
                committed(ids)

        await asyncio.gather(*(caller() for _ in range(callers)))


async def _run_wave(
    dep: Deployment, agents: WaveAgents, plan: WavePlan, args: argparse.Namespace, tls: bool
) -> WaveResult:
    prefix = f"w-{uuid.uuid4().hex[:6]}-"
    job_ids = [f"{prefix}{i:06d}" for i in range(args.jobs)]
    step = max(1, args.jobs // max(1, args.sampled_jobs))
    sampled = job_ids[::step][: args.sampled_jobs]
    per_job = events_per_job(plan)
    ideal = math.ceil(args.jobs / (args.agents * args.slots)) * args.job_seconds
    pids = [p.popen.pid for p in dep.processes if p.popen is not None]
    cpu_before = [_cpu_seconds(pid) for pid in pids]
    agents_before = sum(_cpu_seconds(pid) for pid in agents.pids)
    machine_before = _machine_ticks()
    with store_poller(dep.db_url, sampled, per_job, args.poll_ms / 1000) as poller:
        channels = [dep.channel(i) for i in range(max(1, args.watchers))]
        watches: list[JobWatch] = []
        watching: list[asyncio.Task[None]] = []
        try:
            stubs = [services_pb2_grpc.JobServiceStub(c) for c in channels[: args.watchers]]
            watched = set(sampled)

            def watch(ids: list[str]) -> None:
                # Every watcher follows each sampled job from its submit on, as a person
                # who submitted it would (WatchJobBatches replays what was stored before
                # the stream opened, then follows).
                for job_id in (j for j in ids if j in watched):
                    for stub in stubs:
                        seen = JobWatch()
                        watches.append(seen)
                        watching.append(asyncio.create_task(watch_job(stub, job_id, seen)))

            began = time.time()
            await _submit(dep, job_ids, args.batch, watch)
            submitted = time.time() - began
            with StoreReader(dep.db_url) as reader:
                deadline = time.monotonic() + args.timeout
                while reader.finished(prefix) < args.jobs:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"wave not done: {reader.states(prefix)}")
                    await asyncio.sleep(0.2)  # polling the store for the wave's end
                makespan = reader.last_update(prefix) - began
                states = reader.states(prefix)
                stored, bad = reader.bad_event_runs(prefix, per_job)
            await asyncio.wait_for(asyncio.gather(*watching), timeout=60)
        finally:
            for task in watching:
                task.cancel()
            await asyncio.gather(*watching, return_exceptions=True)
            for channel in channels:
                await channel.close(None)
        lags = poller()
    replica_cpu = [_cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
    agents_cpu = sum(_cpu_seconds(pid) for pid in agents.pids) - agents_before
    busy, total = (a - b for a, b in zip(_machine_ticks(), machine_before, strict=True))
    tally = agents.tally()
    return WaveResult(
        tls=tls,
        makespan=makespan,
        ideal=ideal,
        submit_seconds=submitted,
        lags=lags,
        watcher_lags=[lag for w in watches for lag in w.lags_ms],
        watches=len(watches),
        watches_correct=sum(w.correct(per_job) for w in watches),
        watch_errors=[w.error for w in watches if w.error][:3],
        states=states,
        events_stored=stored,
        bad_event_jobs=bad,
        started=len(tally.started_ids),
        started_twice=len(tally.started_ids) - len(set(tally.started_ids)),
        over_slots=tally.over_slots,
        cpu_seconds=sum(replica_cpu),
        wave_start=began,
        replica_cpu=replica_cpu,
        agents_cpu=agents_cpu,
        machine_busy=busy / max(1, total),
    )


def run_once(args: argparse.Namespace, tls: bool, prefilled: int = 0) -> WaveResult:
    """One wave; the control planes' RSS is sampled from their launch to the wave's end."""
    work = Path(tempfile.mkdtemp(prefix="h2k-bench-wave-"))
    names = [f"node-w{i:04d}" for i in range(args.agents)]
    clusters: list[Cluster] = []
    try:
        with (
            memory.RssSampler(lambda: _pids(clusters)) as rss,
            deployment(work, args, tls, clusters, prefilled) as dep,
        ):
            leaves = None
            if dep.pki is not None:
                leaves = {n: (leaf.cert, leaf.key) for n in names for leaf in [dep.pki.client(n)]}
            plan = WavePlan(
                control_planes=tuple(dep.addresses),
                slots=args.slots,
                interval=args.interval,
                job_seconds=args.job_seconds,
                ca_cert=dep.pki.ca.cert if dep.pki is not None else None,
                leaves=leaves,
            )
            with WaveAgents(names, plan, args.agent_processes) as agents:
                asyncio.run(_wait_ready(dep, names, args.timeout))
                result = asyncio.run(_run_wave(dep, agents, plan, args, tls))
            wave = (result.wave_start, result.wave_start + result.makespan)
            result.rss = memory.WaveRss.of(rss, prefilled, dep.startup_seconds, wave)
            return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pids(clusters: list[Cluster]) -> list[int]:
    """The control planes launched so far."""
    procs = [c.controlplane.popen for c in clusters if c.controlplane is not None]
    return [p.pid for p in procs if p is not None]


async def _wait_ready(dep: Deployment, names: list[str], timeout: float) -> None:
    async with dep.channel() as channel:
        stub = services_pb2_grpc.AgentRegistryStub(channel)
        deadline = time.monotonic() + timeout
        while True:
            listed = await stub.ListAgents(services_pb2.ListAgentsRequest())
            if {a.name for a in listed.agents} >= set(names):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("fake agents did not register")
            await asyncio.sleep(0.1)  # polling the registry


# --- the report ----------------------------------------------------------------------------


def _windows(result: WaveResult) -> list[tuple[str, int, float, float]]:
    """(window, events, p50, p99) of the ingest lag over tenths of the makespan."""
    span = result.makespan / WINDOWS
    rows = []
    for i in range(WINDOWS):
        lo, hi = result.wave_start + i * span, result.wave_start + (i + 1) * span
        part = [lag for at, lag in result.lags if lo <= at < hi]
        rows.append((f"{i * span:.3g}-{(i + 1) * span:.3g} s", len(part), *_p(part)))
    return rows


def _p(values: list[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 99)


def report(results: list[WaveResult], args: argparse.Namespace, plan_events: int) -> bool:
    ok = True
    rows = []
    for r in results:
        lag = [x for _at, x in r.lags]
        worst = max((row[3] for row in _windows(r) if row[1]), default=float("nan"))
        correct = (
            r.states == {"COMPLETED": args.jobs}
            and r.bad_event_jobs == 0
            and r.events_stored == args.jobs * plan_events
            and r.watches_correct == r.watches
            and r.started_twice == 0
            and r.over_slots == 0
        )
        ok &= correct
        prefilled = f", {r.rss.prefilled:,} finished stored" if r.rss and r.rss.prefilled else ""
        rows.append(
            [
                ("on" if r.tls else "off") + prefilled,
                r.makespan,
                r.ideal,
                f"{r.makespan / r.ideal:.3f}x",
                r.submit_seconds,
                *_p(lag),
                worst,
                *_p(r.watcher_lags),
                f"{r.watches_correct}/{r.watches}",
                "yes" if correct else "NO",
                f"{r.cpu_seconds / r.makespan:.0%}",
                " / ".join(f"{c / r.makespan:.0%}" for c in r.replica_cpu),
                f"{r.agents_cpu / r.makespan:.0%}",
                f"{r.machine_busy:.0%}",
            ]
        )
    print_table(
        f"wave: {args.jobs} jobs, {args.agents} agents x {args.slots} slots, an event every "
        f"{args.interval:g} s for {args.job_seconds:g} s; store {args.store}, "
        f"{args.replicas} replica(s); {machine_line()}",
        [
            "TLS",
            "makespan s",
            "ideal s",
            "vs ideal",
            "submit s",
            "ingest p50 ms",
            "ingest p99 ms",
            "worst tenth p99 ms",
            "watcher p50 ms",
            "watcher p99 ms",
            "watches exact",
            "correct",
            "control-plane CPU",
            "per replica",
            "fake agents CPU",
            "machine busy",
        ],
        rows,
    )
    for r in results:
        print_table(
            f"ingest lag through the wave (TLS {'on' if r.tls else 'off'})",
            ["window", "events", "p50 ms", "p99 ms"],
            _windows(r),
        )
        detail = (
            f"states {r.states}; events stored {r.events_stored} "
            f"(expected {args.jobs * plan_events}), jobs with a bad event run {r.bad_event_jobs}; "
            f"ExecuteJob calls {r.started}, started twice {r.started_twice}, "
            f"over slots {r.over_slots}"
        )
        print(f"\ncorrectness (TLS {'on' if r.tls else 'off'}): {detail}")
        if r.watch_errors:
            print(f"watch errors: {r.watch_errors}")
    for r in results:
        lag = [x for _at, x in r.lags]
        tag = f"(TLS {'on' if r.tls else 'off'})"
        print(
            f"bar: makespan <= {MAKESPAN_BAR:.2f} x ideal {tag} ({r.makespan / r.ideal:.3f}x): "
            f"{verdict(r.makespan <= MAKESPAN_BAR * r.ideal)}"
        )
        print(
            f"bar: ingest lag p99 < {LAG_BAR_MS:.0f} ms {tag} ({_p(lag)[1]:.0f} ms): "
            f"{verdict(_p(lag)[1] < LAG_BAR_MS)}"
        )
    print(f"no event lost, repeated or out of order; exactly-once start: {verdict(ok)}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wave", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds (the test suite's)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--slots", type=int, default=10, help="max_concurrent_jobs per agent")
    parser.add_argument("--interval", type=float, default=0.5, help="s between progress events")
    parser.add_argument("--job-seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=100, help="specs per SubmitJobs call")
    parser.add_argument("--tls", choices=("off", "on", "both"), default="both")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--replicas", type=int, default=1, help="> 1 needs --store postgres")
    parser.add_argument("--agent-processes", type=int, default=2)
    parser.add_argument("--sampled-jobs", type=int, default=100)
    parser.add_argument("--watchers", type=int, default=3, help="each follows every sampled job")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="the store poller's period")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--prefill-finished",
        type=int,
        default=0,
        metavar="N",
        help="bar 6: each run also on a store already holding N finished jobs (bench.prefill, "
        "kept by recipe hash), the control plane's RSS compared with the empty store's",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.replicas > 1 and args.store != "postgres":
        parser.error("--replicas > 1 needs --store postgres (SQLite serves one control plane)")
    if args.prefill_finished and args.store != "sqlite":
        parser.error("--prefill-finished writes a SQLite store (--store sqlite)")
    # A SIGTERM (timeout, Ctrl-C of a wrapper) still stops the control planes and PostgreSQL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tls]
    stores = [0, args.prefill_finished] if args.prefill_finished else [0]
    results = [run_once(args, tls, n) for tls in modes for n in stores]
    plan_events = max(1, round(args.job_seconds / args.interval)) + 1
    ok = report(results, args, plan_events)
    memory.print_wave_rss(results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
