"""Scheduling: placements/s draining a backlog onto 100 fake agents, and dispatch latency.

A real h2k-controlplane (SQLite) gets ``--jobs`` queued jobs while no agent is registered.
Then ``--agents`` fake agents (one child process, one grpc.aio Worker server and port each,
every job completes at once) register through AgentRegistry, all at once (``--one-by-one``: one
after another, as in a rolling roll-out), and the clock starts: placements/s is jobs / time
until the last ExecuteJob arrived at an agent; it is also given from the moment the last agent
was registered. Then, with the backlog gone, jobs are submitted at a steady ``--rate`` and
submit-to-dispatch latency (SubmitJob sent -> ExecuteJob arrived at the agent) is measured per
job.

    python -m bench.schedule [--jobs 10000] [--agents 100] [--slots 4] [--one-by-one]
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
    capabilities,
    controlplane_process,
    machine_line,
    percentile,
    print_table,
    spec_message,
    verdict,
)
from bench.fake_agents import FakeAgents
from protocol.gen.h2k.v1 import services_pb2, services_pb2_grpc

BAR = 1000.0
HEARTBEAT_SECONDS = 5


async def submit_all(address: str, ids: list[str], concurrency: int = 32) -> None:
    async with aio_channel(address) as channel:
        stub = services_pb2_grpc.JobServiceStub(channel)
        pending = iter(ids)

        async def caller() -> None:
            for job_id in pending:
                await stub.SubmitJob(services_pb2.SubmitJobRequest(spec=spec_message(job_id)))

        await asyncio.gather(*(caller() for _ in range(concurrency)))


async def heartbeats(address: str, names: list[str]) -> None:
    """Keep every fake agent's lease (the control plane runs with a 15 s lease)."""
    async with aio_channel(address) as channel:
        stub = services_pb2_grpc.AgentRegistryStub(channel)
        while True:
            for name in names:
                await stub.Heartbeat(services_pb2.HeartbeatRequest(name=name))
            await asyncio.sleep(HEARTBEAT_SECONDS - 1)  # the heartbeat period itself


async def register(
    address: str, agents: list[tuple[str, str]], slots: int, one_by_one: bool = False
) -> float:
    """Register every agent: all at once (a fleet whose agents come up together, each on its
    own), or one after another (a rolling roll-out: the fleet grows while the queue drains).

    Returns when the last registration was answered (time.time()).
    """
    async with aio_channel(address) as channel:
        stub = services_pb2_grpc.AgentRegistryStub(channel)

        async def one(name: str, agent_address: str) -> None:
            await stub.RegisterAgent(
                services_pb2.RegisterAgentRequest(
                    name=name,
                    address=agent_address,
                    capabilities=capabilities(),
                    max_concurrent_jobs=slots,
                    version="bench",
                )
            )

        if one_by_one:
            for name, agent_address in agents:
                await one(name, agent_address)
        else:
            await asyncio.gather(*(one(name, agent_address) for name, agent_address in agents))
    return time.time()


async def wait_arrivals(agents: FakeAgents, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while agents.count() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {agents.count()}/{count} jobs reached an agent")
        await asyncio.sleep(0.05)  # polling the fake agents' counter


async def measure(address: str, agents: FakeAgents, args: argparse.Namespace) -> dict[str, float]:
    prefix = uuid.uuid4().hex[:6]
    backlog = [f"q-{prefix}-{i}" for i in range(args.jobs)]
    began = time.monotonic()
    await submit_all(address, backlog)
    submit_rate = args.jobs / (time.monotonic() - began)
    names = [name for name, _ in agents.addresses]
    start = time.time()
    registered = await register(address, agents.addresses, args.slots, args.one_by_one)
    beating = asyncio.create_task(heartbeats(address, names))
    try:
        await wait_arrivals(agents, args.jobs, timeout=args.timeout)
        arrived = sorted(agents.arrivals().values())
        drain = arrived[-1] - start
        # The steady rate: the middle 80 % of arrivals, without registration and the tail.
        lo, hi = arrived[len(arrived) // 10], arrived[len(arrived) * 9 // 10]
        steady = (len(arrived) * 8 // 10) / max(hi - lo, 1e-9)
        # Once every agent is in: the scheduler's rate with the whole fleet to fill.
        later = [t for t in arrived if t > registered]
        fleet = len(later) / max(arrived[-1] - registered, 1e-9)
        latencies = await paced_latency(address, agents, args)
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
    return {
        "submit_rate": submit_rate,
        "drain_s": drain,
        "rate": args.jobs / drain,
        "steady": steady,
        "register_s": registered - start,
        "fleet": fleet,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "latency_jobs": float(len(latencies)),
    }


async def paced_latency(address: str, agents: FakeAgents, args: argparse.Namespace) -> list[float]:
    """Submit ``--latency-jobs`` at ``--rate``/s; SubmitJob sent -> ExecuteJob arrived."""
    prefix = uuid.uuid4().hex[:6]
    sent: dict[str, float] = {}
    before = agents.count()
    async with aio_channel(address) as channel:
        stub = services_pb2_grpc.JobServiceStub(channel)
        tasks = []
        start = time.monotonic()
        for i in range(args.latency_jobs):
            pause = start + i / args.rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)  # pacing the submit rate
            job_id = f"l-{prefix}-{i}"
            sent[job_id] = time.time()
            request = services_pb2.SubmitJobRequest(spec=spec_message(job_id))
            tasks.append(asyncio.ensure_future(stub.SubmitJob(request)))
        await asyncio.gather(*tasks)
    await wait_arrivals(agents, before + args.latency_jobs, timeout=args.timeout)
    arrivals = agents.arrivals()
    return [arrivals[job_id] - t for job_id, t in sent.items()]


def run(args: argparse.Namespace) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="h2k-bench-schedule-"))
    extra = ("--heartbeat-interval", str(HEARTBEAT_SECONDS), "--lease-seconds", "15")
    try:
        with (
            controlplane_process(work, *extra) as (cluster, _proc),
            FakeAgents(args.agents) as agents,
        ):
            return asyncio.run(measure(cluster.address, agents, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(result: dict[str, float], args: argparse.Namespace) -> bool:
    how = "one after another" if args.one_by_one else "all at once"
    rows = [
        ["backlog submitted (SubmitJob calls/s)", result["submit_rate"]],
        [f"drain {args.jobs} jobs: seconds from registration to last dispatch", result["drain_s"]],
        ["placements/s over the drain", result["rate"]],
        ["placements/s, steady (middle 80 % of dispatches)", result["steady"]],
        [f"seconds to register every agent ({how})", result["register_s"]],
        ["placements/s once every agent was registered", result["fleet"]],
        [
            f"submit-to-dispatch p50 ms ({int(result['latency_jobs'])} jobs at {args.rate:g}/s)",
            result["p50_ms"],
        ],
        ["submit-to-dispatch p99 ms", result["p99_ms"]],
    ]
    print_table(
        f"scheduling: {args.jobs} queued jobs, {args.agents} fake agents x {args.slots} slots; "
        f"{machine_line()}",
        ["measure", "value"],
        rows,
    )
    ok = result["rate"] >= BAR
    print(f"bar: >= {BAR:.0f} placements/s ({result['rate']:.0f}): {verdict(ok)}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schedule", description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--slots", type=int, default=4, help="max_concurrent_jobs per agent")
    parser.add_argument("--rate", type=float, default=50.0, help="latency phase submits/s")
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="register the agents one after another (a rolling roll-out) instead of at once",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report(run(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
