"""Fake agents for the wave benchmark: the real Worker and AgentRegistry protocol, no disk work.

Each agent is its own grpc.aio Worker server on a loopback port (TLS with its own certificate
when asked), registers itself with the control plane and heartbeats like ``h2k-agent`` (the
jobs it runs in ``running_job_ids``). ExecuteJob starts a job that emits RUNNING, then a
PROGRESSING event every ``interval`` seconds for ``job_seconds``, then COMPLETED, whether or
not a stream is open; ExecuteJob and AttachJob (from a seq) stream its events. Every event is
stamped with its creation time in ``details["sent_ns"]`` (time.time_ns(): one clock for every
process here). Only the conversion itself is skipped.

Agents run in ``processes`` child processes (spawned), so the control plane relays streams from
other processes as it does in production. Each process counts what a real agent would refuse:
a job started twice, more jobs at once than its slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

from bench.fake_agents import progress_event
from protocol.gen.h2k.v1 import agent_pb2, job_pb2, services_pb2, services_pb2_grpc


@dataclass(frozen=True)
class WavePlan:
    """What every fake agent does, and where it registers."""

    control_planes: tuple[str, ...]  # agent i registers with control_planes[i % len]
    slots: int
    interval: float  # seconds between PROGRESSING events
    job_seconds: float  # from RUNNING to COMPLETED
    heartbeat_seconds: float = 4.0
    # TLS: the CA certificate, and each agent's (cert, key) files by name; None: plaintext.
    ca_cert: Path | None = None
    leaves: dict[str, tuple[Path, Path]] | None = None


@dataclass
class AgentTally:
    """What one process's agents saw."""

    started_ids: list[str] = field(default_factory=list)  # one entry per ExecuteJob
    completed: int = 0
    over_slots: int = 0  # ExecuteJob calls that found every slot busy
    first_start: float = 0.0
    last_completion: float = 0.0


def _capabilities() -> agent_pb2.Capabilities:
    return agent_pb2.Capabilities(
        probes=[agent_pb2.CapabilityProbe(name="qemu_img", available=True)],
        memory_total_bytes=16 << 30,
        disk_free_bytes=200 << 30,
    )


class _RunningJob:
    """One job on a fake agent: its events so far, whether it ended, who waits for more."""

    def __init__(self) -> None:
        self.events: list[job_pb2.ProgressEvent] = []
        self.ended = False
        self.changed = asyncio.Condition()

    async def add(self, event: job_pb2.ProgressEvent, last: bool = False) -> None:
        async with self.changed:
            self.events.append(event)
            self.ended = last
            self.changed.notify_all()

    async def stream(self, after_seq: int) -> AsyncIterator[job_pb2.ProgressEvent]:
        """Every event after ``after_seq``, then the ones to come, until the job ends."""
        sent = after_seq
        while True:
            async with self.changed:
                while not (self.ended or (self.events and self.events[-1].seq > sent)):
                    await self.changed.wait()
                fresh = [e for e in self.events if e.seq > sent]
                ended = self.ended
            for event in fresh:
                yield event
                sent = event.seq
            if ended and not fresh:
                return


class WaveAgent(services_pb2_grpc.WorkerServicer):
    """A job runs on its own, as in ``h2k-agent``: ExecuteJob starts it and streams it,
    AttachJob streams it again from a seq (a control-plane replica that took the job over),
    and a dropped stream does not stop the job."""

    def __init__(self, name: str, plan: WavePlan, tally: AgentTally) -> None:
        self.name = name
        self.plan = plan
        self.tally = tally
        self.running: set[str] = set()
        self.jobs: dict[str, _RunningJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _event(self, request: Any, seq: int, state: int, percent: float) -> job_pb2.ProgressEvent:
        return progress_event(request, self.name, seq, state, percent)

    async def ExecuteJob(
        self, request: services_pb2.ExecuteJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[job_pb2.ProgressEvent]:
        job_id = request.spec.job_id
        self.tally.started_ids.append(job_id)
        if len(self.running) >= self.plan.slots:
            self.tally.over_slots += 1
        self.running.add(job_id)
        self.tally.first_start = self.tally.first_start or time.time()
        job = self.jobs[job_id] = _RunningJob()
        task = asyncio.create_task(self._run(request, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        start_seq = request.start_seq or 1
        async for event in job.stream(start_seq - 1):
            yield event

    async def AttachJob(
        self, request: services_pb2.AttachJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[job_pb2.ProgressEvent]:
        job = self.jobs.get(request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not known here")
            return
        async for event in job.stream(request.after_seq):
            yield event

    async def _run(self, request: services_pb2.ExecuteJobRequest, job: _RunningJob) -> None:
        job_id = request.spec.job_id
        try:
            seq = request.start_seq or 1
            await job.add(self._event(request, seq, job_pb2.JOB_STATE_RUNNING, 0))
            start = time.monotonic()
            steps = max(1, round(self.plan.job_seconds / self.plan.interval))
            for i in range(1, steps):
                pause = start + i * self.plan.interval - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)  # pacing the job's progress, not synchronisation
                seq += 1
                percent = 100 * i / steps
                await job.add(self._event(request, seq, job_pb2.JOB_STATE_PROGRESSING, percent))
            pause = start + self.plan.job_seconds - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)  # the job's length
            seq += 1
            done = self._event(request, seq, job_pb2.JOB_STATE_COMPLETED, 100)
            done.result.outputs.add(kind="image", path="/data/output/vm.qcow2", format="qcow2")
            await job.add(done, last=True)
            self.tally.completed += 1
            self.tally.last_completion = time.time()
        finally:
            self.running.discard(job_id)

    async def CancelJob(
        self, request: services_pb2.WorkerCancelJobRequest, context: grpc.aio.ServicerContext
    ) -> services_pb2.WorkerCancelJobResponse:
        return services_pb2.WorkerCancelJobResponse(found=False)


def events_per_job(plan: WavePlan) -> int:
    """RUNNING, the PROGRESSING events, COMPLETED."""
    return max(1, round(plan.job_seconds / plan.interval)) + 1


def _channel(plan: WavePlan, name: str, target: str) -> grpc.aio.Channel:
    if plan.ca_cert is None or plan.leaves is None:
        return grpc.aio.insecure_channel(target)
    cert, key = plan.leaves[name]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=plan.ca_cert.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    return grpc.aio.secure_channel(target, credentials)


async def _keep_registered(agent: WaveAgent, address: str, target: str) -> None:
    """Register, then heartbeat with the running jobs, as h2k-agent does."""
    async with _channel(agent.plan, agent.name, target) as channel:
        stub = services_pb2_grpc.AgentRegistryStub(channel)
        await stub.RegisterAgent(
            services_pb2.RegisterAgentRequest(
                name=agent.name,
                address=address,
                capabilities=_capabilities(),
                max_concurrent_jobs=agent.plan.slots,
                version="bench-wave",
            )
        )
        while True:
            await asyncio.sleep(agent.plan.heartbeat_seconds)  # the heartbeat period itself
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Heartbeat(
                    services_pb2.HeartbeatRequest(
                        name=agent.name, running_job_ids=sorted(agent.running)
                    )
                )


def _serve(names: list[tuple[str, str]], plan: WavePlan, conn: Connection) -> None:
    """Child process: serve, register and heartbeat ``names``; report on request."""

    async def serve() -> None:
        tally = AgentTally()
        servers, keepers = [], []
        for name, target in names:
            server = grpc.aio.server()
            agent = WaveAgent(name, plan, tally)
            services_pb2_grpc.add_WorkerServicer_to_server(agent, server)
            if plan.leaves is not None and plan.ca_cert is not None:
                cert, key = plan.leaves[name]
                creds = grpc.ssl_server_credentials(
                    [(key.read_bytes(), cert.read_bytes())],
                    root_certificates=plan.ca_cert.read_bytes(),
                    require_client_auth=True,
                )
                port = server.add_secure_port("127.0.0.1:0", creds)
            else:
                port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            keeper = _keep_registered(agent, f"127.0.0.1:{port}", target)
            keepers.append(asyncio.create_task(keeper))
        conn.send("serving")
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "tally":
                conn.send(tally)
            else:
                break
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        for server in servers:
            await server.stop(None)

    asyncio.run(serve())


class WaveAgents:
    """``with WaveAgents(names, plan, processes=2) as agents:`` serves them in child processes."""

    def __init__(self, names: list[str], plan: WavePlan, processes: int = 1) -> None:
        context = multiprocessing.get_context("spawn")
        self._children: list[tuple[Connection, Any]] = []
        for part in range(processes):
            parent, child = context.Pipe()
            targets = plan.control_planes
            share = [(n, targets[i % len(targets)]) for i, n in enumerate(names)][part::processes]
            if share:
                proc = context.Process(target=_serve, args=(share, plan, child), daemon=True)
                self._children.append((parent, proc))

    def __enter__(self) -> WaveAgents:
        for _conn, proc in self._children:
            proc.start()
        for conn, _proc in self._children:
            if conn.recv() != "serving":
                raise RuntimeError("a fake agent process failed to start")
        return self

    def __exit__(self, *exc: object) -> None:
        for conn, _proc in self._children:
            with contextlib.suppress(OSError):
                conn.send("stop")
        for _conn, proc in self._children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()

    @property
    def pids(self) -> list[int]:
        return [int(proc.pid or 0) for _conn, proc in self._children]

    def tally(self) -> AgentTally:
        """What every process's agents saw, summed."""
        total = AgentTally()
        for conn, _proc in self._children:
            conn.send("tally")
            part: AgentTally = conn.recv()
            total.started_ids += part.started_ids
            total.completed += part.completed
            total.over_slots += part.over_slots
            starts = [t for t in (total.first_start, part.first_start) if t]
            total.first_start = min(starts, default=0.0)
            total.last_completion = max(total.last_completion, part.last_completion)
        return total
