"""Submit throughput: durable SubmitJob calls/s against the control plane vs a bare echo server.

Both servers run as their own process; the same client (one asyncio process, the same
channels, the same concurrency, the same request messages) drives each for the same time.
  echo      grpc.aio server whose SubmitJob answers with the request's spec (no validation,
            no store): what gRPC + Python cost alone
  h2k       a real h2k-controlplane on SQLite (WAL, synchronous=FULL): every answer comes
            after the job is committed to disk
  SubmitJobs the same, a fresh store, ``--batch`` jobs per call from ``--batch-callers``
            callers (the row counts jobs, not calls)

    python -m bench.submit [--seconds 10] [--concurrency 64] [--channels 4]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from bench.common import (
    aio_channel,
    controlplane_process,
    machine_line,
    percentile,
    print_table,
    spec_message,
    verdict,
)
from devsupport.cluster import free_port, is_serving, wait_for
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc

BAR = 0.60
BATCH_ROW = "h2k SubmitJobs x{n}"


class EchoJobs(services_pb2_grpc.JobServiceServicer):
    """SubmitJob answered at once with a job carrying the request's spec."""

    async def SubmitJob(
        self, request: services_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> services_pb2.SubmitJobResponse:
        job = job_pb2.Job(spec=request.spec, state=job_pb2.JOB_STATE_QUEUED)
        return services_pb2.SubmitJobResponse(job=job, created=True)


def _serve_echo(port: int) -> None:
    async def serve() -> None:
        from grpc_health.v1 import health, health_pb2_grpc

        server = grpc.aio.server()
        services_pb2_grpc.add_JobServiceServicer_to_server(EchoJobs(), server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


async def drive(
    address: str, seconds: float, concurrency: int, channels: int, batch: int = 0
) -> dict[str, float]:
    """Submit unique jobs from ``concurrency`` callers for ``seconds``; jobs/s and latency.

    ``batch`` 0: one SubmitJob per job; n: SubmitJobs calls of n jobs each (latency per call).
    """
    opened = [aio_channel(address) for _ in range(channels)]
    stubs = [services_pb2_grpc.JobServiceStub(c) for c in opened]
    prefix = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    counter = iter(range(10**9))

    async def send(stub: services_pb2_grpc.JobServiceStub) -> None:
        if batch:
            specs = [spec_message(f"m-{prefix}-{next(counter)}") for _ in range(batch)]
            replies = await stub.SubmitJobs(services_pb2.SubmitJobsRequest(specs=specs))
            assert all(r.created for r in replies.results)
            return
        spec = spec_message(f"b-{prefix}-{next(counter)}")
        reply = await stub.SubmitJob(services_pb2.SubmitJobRequest(spec=spec))
        assert reply.created

    # Warm up: connections open, first-call paths compiled.
    for stub in stubs:
        await send(stub)
    stop_at = time.monotonic() + seconds

    async def caller(stub: services_pb2_grpc.JobServiceStub) -> None:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            await send(stub)
            latencies.append(time.perf_counter() - started)

    began = time.monotonic()
    await asyncio.gather(*(caller(stubs[i % channels]) for i in range(concurrency)))
    took = time.monotonic() - began
    for channel in opened:
        await channel.close(None)
    jobs = len(latencies) * max(batch, 1)
    return {
        "calls": jobs,
        "rate": jobs / took,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "bytes": float(len(spec_message(f"b-{prefix}-0").SerializeToString())),
    }


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Echo first, then h2k, then echo again (the echo rate is their mean)."""
    work = Path(tempfile.mkdtemp(prefix="h2k-bench-submit-"))
    results: dict[str, dict[str, float]] = {}
    port = free_port()
    echo = multiprocessing.get_context("spawn").Process(target=_serve_echo, args=(port,))
    echo.start()
    try:
        address = f"127.0.0.1:{port}"
        wait_for(lambda: is_serving(address), what="echo server")
        drive_args = (args.seconds, args.concurrency, args.channels)
        results["echo (before)"] = asyncio.run(drive(address, *drive_args))
        with controlplane_process(work) as (cluster, _proc):
            results["h2k SubmitJob"] = asyncio.run(drive(cluster.address, *drive_args))
        if args.batch:
            # A fresh store, so the batch row does not start behind the first one's queue.
            with controlplane_process(work / "batch") as (cluster, _proc):
                results[BATCH_ROW.format(n=args.batch)] = asyncio.run(
                    drive(
                        cluster.address, args.seconds, args.batch_callers, args.channels, args.batch
                    )
                )
        results["echo (after)"] = asyncio.run(drive(address, *drive_args))
    finally:
        echo.terminate()
        echo.join(10)
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> bool:
    echo_rate = (results["echo (before)"]["rate"] + results["echo (after)"]["rate"]) / 2
    h2k = results["h2k SubmitJob"]["rate"]
    rows = [
        [name, int(r["calls"]), r["rate"], r["p50_ms"], r["p99_ms"], f"{r['rate'] / echo_rate:.0%}"]
        for name, r in results.items()
    ]
    payload = int(results["h2k SubmitJob"]["bytes"])
    print_table(
        f"submit throughput: {args.concurrency} concurrent callers on {args.channels} channels, "
        f"{args.seconds:g} s each, request spec {payload} bytes; {machine_line()}",
        ["server", "calls", "calls/s", "p50 ms", "p99 ms", "vs echo"],
        rows,
    )
    ok = h2k >= BAR * echo_rate
    print(f"bar: h2k >= {BAR:.0%} of echo ({h2k / echo_rate:.0%}): {verdict(ok)}")
    if args.batch:
        print(
            f"batch submit: SubmitJobs rows count jobs (calls x {args.batch}), "
            f"{args.batch_callers} concurrent callers; latency is per call"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.submit", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="specs per SubmitJobs (0: skip)")
    parser.add_argument("--batch-callers", type=int, default=8)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report(run(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
