"""Progress latency and fan-out: one job emitting 1,000 events/s, watched by 1, 10, 100 clients.

A fake agent (own process) stamps each PROGRESSING event with its send time; the events go
through a real h2k-controlplane (stored, committed, then fanned out) to WatchJob streams
opened with raw grpc.aio stubs in this process. Latency = watcher's receipt - agent's stamp
(time.time_ns(): one clock for every process on the machine), per event and watcher.

    python -m bench.fanout [--watchers 1,10,100] [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

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
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc

BAR_MS = 20.0
CHANNELS = 10


class Watcher:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.latencies: list[float] = []
        self.received = 0

    async def follow(self, stub: services_pb2_grpc.JobServiceStub, job_id: str) -> None:
        async for event in stub.WatchJob(services_pb2.WatchJobRequest(job_id=job_id)):
            now = time.time_ns()
            if event.state == job_pb2.JOB_STATE_RUNNING:
                self.started.set()
            elif event.state == job_pb2.JOB_STATE_PROGRESSING:
                self.received += 1
                self.latencies.append((now - int(event.details["sent_ns"])) / 1e6)


async def one_round(address: str, agent: tuple[str, str], watchers: int) -> list[Watcher]:
    job_id = f"fan-{uuid.uuid4().hex[:8]}"
    channels = [aio_channel(address) for _ in range(min(CHANNELS, watchers))]
    stubs = [services_pb2_grpc.JobServiceStub(c) for c in channels]
    await stubs[0].SubmitJob(services_pb2.SubmitJobRequest(spec=spec_message(job_id)))
    crowd = [Watcher() for _ in range(watchers)]
    tasks = [
        asyncio.create_task(w.follow(stubs[i % len(stubs)], job_id)) for i, w in enumerate(crowd)
    ]
    await register(address, [agent], slots=1)
    beating = asyncio.create_task(heartbeats(address, [agent[0]]))
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=600)
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
    for channel in channels:
        await channel.close(None)
    return crowd


def run(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="h2k-bench-fanout-"))
    events = int(args.rate * args.seconds)
    # Every watcher here is the same anonymous client: lift the per-client stream limit.
    lease = (
        "--heartbeat-interval",
        str(HEARTBEAT_SECONDS),
        "--lease-seconds",
        "15",
        "--max-streams-per-client",
        str(max(args.watchers) + 10),
    )
    results: dict[int, dict[str, float]] = {}
    try:
        with (
            controlplane_process(work, *lease) as (cluster, _proc),
            FakeAgents(
                1, Plan(events=events, events_per_s=args.rate, lead_in=args.lead_in)
            ) as fake,
        ):
            for count in args.watchers:
                crowd = asyncio.run(one_round(cluster.address, fake.addresses[0], count))
                latencies = [ms for w in crowd for ms in w.latencies]
                results[count] = {
                    "events": float(events),
                    "min_received": float(min(w.received for w in crowd)),
                    "late_start": float(sum(not w.started.is_set() for w in crowd)),
                    "p50": percentile(latencies, 50),
                    "p99": percentile(latencies, 99),
                    "max": max(latencies, default=float("nan")),
                }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict[int, dict[str, float]], args: argparse.Namespace) -> bool:
    rows = [
        [n, int(r["events"]), int(r["min_received"]), r["p50"], r["p99"], r["max"]]
        for n, r in results.items()
    ]
    print_table(
        f"progress fan-out: one job, {args.rate:g} events/s for {args.seconds:g} s; "
        f"{machine_line()}",
        ["watchers", "events sent", "fewest seen by a watcher", "p50 ms", "p99 ms", "max ms"],
        rows,
    )
    top = max(results)
    ok = results[top]["p99"] < BAR_MS
    print(
        f"bar: p99 < {BAR_MS:g} ms with {top} watchers ({results[top]['p99']:.1f}): {verdict(ok)}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--watchers", default="1,10,100")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--lead-in", type=float, default=2.0, help="pause after RUNNING so watchers attach"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.watchers = [int(n) for n in args.watchers.split(",")]
    report(run(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
