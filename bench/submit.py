"""Submit throughput: durable SubmitJob calls/s against the control plane vs a bare echo server.

Both servers run as their own process; the same client (one asyncio process, the same
channels, the same concurrency, the same request messages) drives each for the same time.
  echo      grpc.aio server whose SubmitJob answers with the request's spec (no validation,
            no store): what gRPC + Python cost alone
  h2k       a real h2k-controlplane on SQLite (WAL, synchronous=FULL): every answer comes
            after the job is committed to disk
  baseline  with ``--baseline-bin``: another checkout's h2k-controlplane, the same way
  SubmitJobs the same, a fresh store, ``--batch`` jobs per call from ``--batch-callers``
            callers (the row counts jobs, not calls)

Each round drives every server once, in alternating order; a row's "vs echo" is against the
same round's echo, and each server's CPU time per call (all its threads) is printed too.

    python -m bench.submit [--seconds 10] [--concurrency 64] [--channels 4] [--rounds 3]
                           [--baseline-bin /work/main/.venv/bin]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc

from bench.common import (
    aio_channel,
    machine_line,
    percentile,
    print_table,
    spec_message,
    verdict,
)
from devsupport.cluster import Cluster, Process, free_port, is_serving, wait_for
from devsupport.pki import ClusterPKI
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


def _serve_echo(port: int, tls: tuple[str, str, str] | None) -> None:
    """The echo server; ``tls`` (cert, key, CA files): mutual TLS as the control plane's."""

    async def serve() -> None:
        from grpc_health.v1 import health, health_pb2_grpc

        server = grpc.aio.server()
        services_pb2_grpc.add_JobServiceServicer_to_server(EchoJobs(), server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        if tls is None:
            server.add_insecure_port(f"127.0.0.1:{port}")
        else:
            cert, key, ca = (Path(f).read_bytes() for f in tls)
            credentials = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=ca, require_client_auth=True
            )
            server.add_secure_port(f"127.0.0.1:{port}", credentials)
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


async def drive(
    address: str,
    seconds: float,
    concurrency: int,
    channels: int,
    batch: int = 0,
    credentials: grpc.ChannelCredentials | None = None,
) -> dict[str, float]:
    """Submit unique jobs from ``concurrency`` callers for ``seconds``; jobs/s and latency.

    ``batch`` 0: one SubmitJob per job; n: SubmitJobs calls of n jobs each (latency per call).
    ``credentials``: TLS (the admin's certificate), else plaintext.
    """
    opened = [
        aio_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials, options=[("grpc.so_reuseport", 0)])
        for _ in range(channels)
    ]
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


ECHO = "echo"
H2K = "h2k SubmitJob"
BASELINE = "h2k SubmitJob, baseline"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def this_controlplane(workdir: Path, pki: ClusterPKI | None) -> Iterator[tuple[str, int]]:
    """This checkout's ``h2k-controlplane`` (SQLite in ``workdir``, default logging; with
    ``pki`` mutual TLS and its roles file, else --insecure): (address, pid)."""
    cluster = Cluster(workdir)
    cluster.pki = pki
    try:
        proc = cluster.start_controlplane()
        assert proc.popen is not None
        yield cluster.address, proc.popen.pid
    finally:
        cluster.stop()


@contextmanager
def baseline_controlplane(
    bin_dir: Path, workdir: Path, pki: ClusterPKI | None
) -> Iterator[tuple[str, int]]:
    """Another checkout's ``h2k-controlplane`` (its venv's bin dir), started as the bench's
    own is: (address, pid)."""
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    proc = Process(
        "controlplane-baseline",
        [
            str(bin_dir / "h2k-controlplane"),
            "--listen",
            address,
            "--db",
            f"sqlite:///{workdir / 'h2k.db'}",
            *security_args(pki),
        ],
        workdir / "controlplane.log",
    )
    proc.start()
    try:
        wait_for(
            lambda: is_serving(address, credentials(pki)),
            what="baseline control plane",
            timeout=30,
        )
        assert proc.popen is not None
        yield address, proc.popen.pid
    finally:
        proc.stop()


def security_args(pki: ClusterPKI | None) -> list[str]:
    if pki is None:
        return ["--insecure"]
    return [*pki.args(pki.controlplane), "--roles-file", str(pki.roles_file)]


def credentials(pki: ClusterPKI | None) -> grpc.ChannelCredentials | None:
    return None if pki is None else pki.credentials()


def measured(
    address: str,
    pid: int,
    pki: ClusterPKI | None,
    seconds: float,
    concurrency: int,
    channels: int,
    batch: int = 0,
) -> dict[str, float]:
    """One drive, with the server's CPU time per job."""
    before = cpu_seconds(pid)
    drove = drive(address, seconds, concurrency, channels, batch, credentials(pki))
    result = asyncio.run(drove)
    result["cpu_ms"] = (cpu_seconds(pid) - before) * 1000 / max(result["calls"], 1)
    return result


def run(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """Every server driven once per round, in alternating order (ABC, CBA, ...), so that a
    change of load on the machine falls on all of them alike."""
    work = Path(tempfile.mkdtemp(prefix="h2k-bench-submit-"))
    results: dict[str, list[dict[str, float]]] = {}
    port = free_port()
    pki = ClusterPKI.create(work / "pki") if args.tls == "on" else None
    tls = None
    if pki is not None:
        leaf = pki.controlplane
        tls = (str(leaf.cert), str(leaf.key), str(pki.ca.cert))
    echo = multiprocessing.get_context("spawn").Process(target=_serve_echo, args=(port, tls))
    echo.start()
    try:
        with ExitStack() as stack:
            address = f"127.0.0.1:{port}"
            wait_for(lambda: is_serving(address, credentials(pki)), what="echo server")
            assert echo.pid is not None
            servers = {ECHO: (address, echo.pid)}
            servers[H2K] = stack.enter_context(this_controlplane(work / "h2k", pki))
            if args.baseline_bin is not None:
                servers[BASELINE] = stack.enter_context(
                    baseline_controlplane(args.baseline_bin, work / "baseline", pki)
                )
            drive_args = (args.seconds, args.concurrency, args.channels)
            order = list(servers)
            for address, _pid in servers.values():
                # Not counted: connections, first-call paths, the servers' start-up work.
                asyncio.run(
                    drive(
                        address,
                        args.warmup,
                        args.concurrency,
                        args.channels,
                        credentials=credentials(pki),
                    )
                )
            for index in range(args.rounds):
                for name in order if index % 2 == 0 else reversed(order):
                    result = measured(*servers[name], pki, *drive_args)
                    results.setdefault(name, []).append(result)
            if args.batch:
                # A fresh store, so the batch row does not start behind the single calls' queue.
                batch_address, batch_pid = stack.enter_context(
                    this_controlplane(work / "batch", pki)
                )
                results[BATCH_ROW.format(n=args.batch)] = [
                    measured(
                        batch_address,
                        batch_pid,
                        pki,
                        args.seconds,
                        args.batch_callers,
                        args.channels,
                        args.batch,
                    )
                ]
    finally:
        echo.terminate()
        echo.join(10)
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> bool:
    echo_rates = [r["rate"] for r in results[ECHO]]
    rows = []
    for name, runs in results.items():
        for index, r in enumerate(runs):
            # Each round's rate against the same round's echo.
            echo_rate = echo_rates[min(index, len(echo_rates) - 1)]
            rows.append(
                [
                    name,
                    index + 1,
                    int(r["calls"]),
                    r["rate"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["cpu_ms"],
                    f"{r['rate'] / echo_rate:.0%}",
                ]
            )
    payload = int(results[H2K][0]["bytes"])
    print_table(
        f"submit throughput: {args.concurrency} concurrent callers on {args.channels} channels, "
        f"{args.seconds:g} s each, {args.rounds} round(s), TLS {args.tls}, "
        f"request spec {payload} bytes; "
        f"{machine_line()}",
        [
            "server",
            "round",
            "calls",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "server CPU ms/call",
            "vs echo",
        ],
        rows,
    )
    ratios = {
        name: statistics.median(
            r["rate"] / e for r, e in zip(results[name], echo_rates, strict=True)
        )
        for name in (H2K, BASELINE)
        if name in results
    }
    for name, ratio in ratios.items():
        cpu = statistics.median(r["cpu_ms"] for r in results[name])
        print(f"{name}: median of rounds {ratio:.0%} of echo, {cpu:.3f} ms server CPU per call")
    ok = ratios[H2K] >= BAR
    print(f"bar: h2k >= {BAR:.0%} of echo ({ratios[H2K]:.0%}): {verdict(ok)}")
    if args.batch:
        print(
            f"batch submit: SubmitJobs rows count jobs (calls x {args.batch}), "
            f"{args.batch_callers} concurrent callers; latency is per call, CPU per job"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.submit", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="each server once per round")
    parser.add_argument(
        "--tls", choices=("off", "on"), default="off", help="on: mutual TLS, roles (auth)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="s per server, not counted")
    parser.add_argument("--batch", type=int, default=100, help="specs per SubmitJobs (0: skip)")
    parser.add_argument("--batch-callers", type=int, default=8)
    parser.add_argument(
        "--baseline-bin",
        type=Path,
        help="another checkout's venv bin dir: its h2k-controlplane is driven too",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report(run(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
