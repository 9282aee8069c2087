"""Progress latency and fan-out: one job emitting 1,000 events/s, watched by 1, 10, 100 clients.

A fake agent (own process) stamps each PROGRESSING event with its send time; the events go
through a real h2k-controlplane (stored, committed, then fanned out) to watch streams opened
with raw grpc.aio stubs in this process. Latency = watcher's receipt - agent's stamp
(time.time_ns(): one clock for every process on the machine), per event and watcher.

Three ways, side by side in one run:

  bare grpc.aio   a JobService (own process) that makes the events up itself and streams
                  them both ways below: what grpc.aio costs, with no store (the floor)
  WatchJob        h2k, one message per event
  WatchJobBatches h2k, each message carrying every event pending for that watcher

Beside the watchers' latency, a poller (own process) reads the control plane's SQLite file
and reports how long an event takes from the agent to a committed row (agent-to-store lag).

    python -m bench.fanout [--watchers 1,10,100] [--rate 1000] [--seconds 5] [--ways ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.common import (
    aio_channel,
    controlplane_process,
    machine_line,
    percentile,
    print_table,
    spec_message,
    verdict,
)
from bench.fake_agents import FakeAgents, Plan
from bench.schedule import HEARTBEAT_SECONDS, heartbeats, register
from bench.stream_baseline import BareFanoutServer
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc

BAR_MS = 20.0
CHANNELS = 10
SINGLE, BATCHES = "WatchJob", "WatchJobBatches"
BARE = "bare grpc.aio "
WAYS = {"bare": BARE, "single": SINGLE, "batches": BATCHES}
STORE_POLL_SECONDS = 0.002


class Watcher:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.received = 0
        self.messages = 0
        self.last_seq = 0
        self.in_order = True

    def take(self, event: job_pb2.ProgressEvent, now: int) -> None:
        self.in_order &= event.seq == self.last_seq + 1
        self.last_seq = event.seq
        if event.state == job_pb2.JOB_STATE_PROGRESSING:
            self.received += 1
            self.latencies.append((now - int(event.details["sent_ns"])) / 1e6)

    async def follow(self, stub: services_pb2_grpc.JobServiceStub, job_id: str, way: str) -> None:
        request = services_pb2.WatchJobRequest(job_id=job_id)
        if way == BATCHES:
            async for batch in stub.WatchJobBatches(request):
                now = time.time_ns()
                self.messages += 1
                for event in batch.events:
                    self.take(event, now)
        else:
            async for event in stub.WatchJob(request):
                self.messages += 1
                self.take(event, time.time_ns())


async def watch_round(
    address: str,
    job_id: str,
    watchers: int,
    way: str,
    start: Callable[[], Coroutine[Any, Any, None]] | None,
) -> list[Watcher]:
    """Open the watchers, start the job (``start``: a coroutine function), wait for the end."""
    channels = [aio_channel(address) for _ in range(min(CHANNELS, watchers))]
    stubs = [services_pb2_grpc.JobServiceStub(c) for c in channels]
    crowd = [Watcher() for _ in range(watchers)]
    try:
        if start is not None:
            await stubs[0].SubmitJob(services_pb2.SubmitJobRequest(spec=spec_message(job_id)))
        tasks = [
            asyncio.create_task(w.follow(stubs[i % len(stubs)], job_id, way))
            for i, w in enumerate(crowd)
        ]
        beating = asyncio.create_task(start()) if start is not None else None
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=600)
        finally:
            if beating is not None:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
    finally:
        for channel in channels:
            await channel.close(None)
    return crowd


def _poll_store(db: Path, job_id: str, conn: Connection) -> None:
    """Child process: note when each event's row becomes visible, until told to stop."""
    lags: list[float] = []
    last = 0
    while not conn.poll():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as db_conn:
                while not conn.poll():
                    rows = db_conn.execute(
                        "SELECT seq, event FROM job_events WHERE job_id = ? AND seq > ? "
                        "ORDER BY seq",
                        (job_id, last),
                    ).fetchall()
                    now = time.time_ns()
                    for seq, body in rows:
                        last = seq
                        sent = json.loads(body).get("details", {}).get("sent_ns")
                        if sent is not None:
                            lags.append((now - int(sent)) / 1e6)
                    time.sleep(STORE_POLL_SECONDS)  # the poll period, not synchronisation
        except sqlite3.OperationalError:
            time.sleep(0.05)  # the file is not there yet
    conn.recv()
    conn.send(lags)


@contextlib.contextmanager
def store_lag(db: Path, job_id: str) -> Iterator[list[float]]:
    """Agent-to-store lag (ms) of each event of ``job_id``, filled in when the block ends."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_poll_store, args=(db, job_id, child), daemon=True)
    process.start()
    lags: list[float] = []
    try:
        yield lags
    finally:
        parent.send("stop")
        if parent.poll(30):
            lags.extend(parent.recv())
        process.join(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_share(pid: int) -> Iterator[dict[str, float]]:
    """The share of one core ``pid`` used while the block ran (in ``["cpu"]`` afterwards)."""
    used = {"cpu": float("nan")}
    start, wall = cpu_seconds(pid), time.monotonic()
    try:
        yield used
    finally:
        used["cpu"] = (cpu_seconds(pid) - start) / (time.monotonic() - wall)


def summary(crowd: list[Watcher], events: int, lags: list[float]) -> dict[str, float]:
    latencies = [ms for w in crowd for ms in w.latencies]
    return {
        "events": float(events),
        "min_received": float(min(w.received for w in crowd)),
        "in_order": float(all(w.in_order for w in crowd)),
        "messages": sum(w.messages for w in crowd) / len(crowd),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "store_p50": percentile(lags, 50),
        "store_p99": percentile(lags, 99),
    }


def run_bare(args: argparse.Namespace, events: int) -> dict[tuple[str, int], dict[str, float]]:
    results = {}
    server = BareFanoutServer(events, args.rate)
    with server as address:
        for count in args.watchers:
            for way in (SINGLE, BATCHES):
                job_id = f"bare-{uuid.uuid4().hex[:6]}:{count}"
                with cpu_share(server.pid) as cpu, cpu_share(os.getpid()) as client:
                    crowd = asyncio.run(watch_round(address, job_id, count, way, None))
                results[(BARE + way, count)] = summary(crowd, events, [])
                results[(BARE + way, count)].update(server_cpu=cpu["cpu"], client_cpu=client["cpu"])
    return results


def run_h2k(args: argparse.Namespace, events: int) -> dict[tuple[str, int], dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="h2k-bench-fanout-"))
    # Every watcher here is the same anonymous client: lift the per-client stream limit.
    lease = (
        "--heartbeat-interval",
        str(HEARTBEAT_SECONDS),
        "--lease-seconds",
        "15",
        "--max-streams-per-client",
        str(max(args.watchers) + 10),
    )
    ways = [w for w in (SINGLE, BATCHES) if w in args.ways]
    results = {}
    plan = Plan(events=events, events_per_s=args.rate, lead_in=args.lead_in)
    try:
        with (
            controlplane_process(work, *lease) as (cluster, proc),
            FakeAgents(1, plan) as fake,
        ):
            agent = fake.addresses[0]
            cp_pid = proc.popen.pid if proc.popen is not None else 0

            async def start() -> None:
                await register(cluster.address, [agent], slots=1)
                await heartbeats(cluster.address, [agent[0]])

            for count in args.watchers:
                for way in ways:
                    job_id = f"fan-{uuid.uuid4().hex[:8]}"
                    with (
                        store_lag(work / "cp" / "h2k.db", job_id) as lags,
                        cpu_share(cp_pid) as cpu,
                        cpu_share(os.getpid()) as client,
                    ):
                        crowd = asyncio.run(watch_round(cluster.address, job_id, count, way, start))
                    results[(way, count)] = summary(crowd, events, lags)
                    results[(way, count)].update(server_cpu=cpu["cpu"], client_cpu=client["cpu"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict[tuple[str, int], dict[str, float]], args: argparse.Namespace) -> bool:
    rows = [
        [
            way,
            n,
            int(r["events"]),
            int(r["min_received"]),
            "yes" if r["in_order"] else "NO",
            r["messages"],
            r["p50"],
            r["p99"],
            r["max"],
            "-" if way.startswith(BARE) else f"{r['store_p50']:.3g} / {r['store_p99']:.3g}",
            f"{r['server_cpu']:.0%} / {r['client_cpu']:.0%}",
        ]
        for (way, n), r in sorted(results.items(), key=lambda item: (item[0][1], item[0][0]))
    ]
    print_table(
        f"progress fan-out: one job, {args.rate:g} events/s for {args.seconds:g} s; "
        f"{machine_line()}",
        [
            "way",
            "watchers",
            "events sent",
            "fewest seen by a watcher",
            "in seq order",
            "messages per watcher",
            "p50 ms",
            "p99 ms",
            "max ms",
            "agent-to-store p50 / p99 ms",
            "CPU server / watchers",
        ],
        rows,
    )
    top = max(args.watchers)
    best = [r["p99"] for (way, n), r in results.items() if n == top and not way.startswith(BARE)]
    ok = bool(best) and min(best) < BAR_MS
    shown = f"{min(best):.1f}" if best else "n/a"
    print(f"bar: p99 < {BAR_MS:g} ms with {top} watchers (best h2k way: {shown}): {verdict(ok)}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--watchers", default="1,10,100")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--lead-in", type=float, default=2.0, help="pause after RUNNING so watchers attach"
    )
    parser.add_argument("--ways", default=",".join(WAYS), help=f"which of {', '.join(WAYS)} to run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.watchers = [int(n) for n in args.watchers.split(",")]
    args.ways = [WAYS[w] for w in args.ways.split(",")]
    events = int(args.rate * args.seconds)
    results = run_bare(args, events) if BARE in args.ways else {}
    results.update(run_h2k(args, events))
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
