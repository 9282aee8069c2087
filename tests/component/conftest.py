"""In-process control plane (real servicers, real SQLite file) and a test-double agent.

The Worker servicer here stands in for the agent peer only; the real agent is covered by
the integration tests.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from controlplane.server import ControlPlane, ControlPlaneConfig
from protocol.conversion import utcnow
from protocol.gen.h2k.v1 import agent_pb2, job_pb2, services_pb2, services_pb2_grpc

DEADLINE_SECONDS = 10.0

_BASE_DOCUMENT: dict[str, Any] = {
    "version": "1.0",
    "job_id": "job-1",
    "operation": "convert",
    "image": {"path": "/data/input/vm.vmdk", "format": "vmdk"},
    "execution_policy": {"priority": 5},
    "artifacts": {"output_path": "/data/output"},
    "audit": {"requested_by": "migration-team"},
    "parameters": {"output_format": "qcow2"},
}


def job_document(job_id: str = "job-1", **sections: Any) -> dict[str, Any]:
    """A valid v1 job document; keyword arguments replace top-level sections."""
    document = copy.deepcopy(_BASE_DOCUMENT)
    document["job_id"] = job_id
    document.update(copy.deepcopy(sections))
    return document


def spec_message(document: dict[str, Any], unknown_field: int | None = None) -> job_pb2.JobSpec:
    """The protobuf a client would send for a v1 document (valid or not).

    ``unknown_field`` appends a varint field with that number, as a newer client would.
    """
    body = copy.deepcopy(document)
    if "operation" in body:
        body["operation"] = "OPERATION_" + body["operation"].upper()
    msg = json_format.ParseDict(body, job_pb2.JobSpec())
    if unknown_field is not None:
        raw = msg.SerializeToString() + _varint(unknown_field << 3) + b"\x01"
        msg = job_pb2.JobSpec.FromString(raw)
    return msg


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something truthy, or fail after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --- the control plane ------------------------------------------------------------------


@dataclass
class RunningControlPlane:
    control_plane: ControlPlane
    jobs: services_pb2_grpc.JobServiceStub
    registry: services_pb2_grpc.AgentRegistryStub
    channel: grpc.aio.Channel

    async def job(self, job_id: str) -> job_pb2.Job:
        return await self.jobs.GetJob(services_pb2.GetJobRequest(job_id=job_id))

    async def job_in(self, job_id: str, state: int) -> job_pb2.Job:
        async def check() -> job_pb2.Job | None:
            job = await self.job(job_id)
            return job if job.state == state else None

        return await eventually(check, f"{job_id} in {job_pb2.JobState.Name(state)}")

    async def submit(self, document: dict[str, Any]) -> services_pb2.SubmitJobResponse:
        request = services_pb2.SubmitJobRequest(spec=spec_message(document))
        return await self.jobs.SubmitJob(request)

    async def register(self, name: str, address: str, slots: int = 2) -> None:
        await self.registry.RegisterAgent(
            services_pb2.RegisterAgentRequest(
                name=name,
                address=address,
                capabilities=capabilities("qemu_img"),
                max_concurrent_jobs=slots,
                version="test",
            )
        )


def capabilities(*names: str) -> agent_pb2.Capabilities:
    return agent_pb2.Capabilities(
        probes=[agent_pb2.CapabilityProbe(name=n, available=True) for n in names],
        memory_total_bytes=16 << 30,
        disk_free_bytes=200 << 30,
    )


@pytest.fixture
def start_control_plane(tmp_path: Path) -> Callable[..., Any]:
    """``async with start_control_plane() as cp:`` runs one on a free loopback port."""

    @asynccontextmanager
    async def start(
        db: Path | None = None, watch_buffer: int = 256, **settings: Any
    ) -> AsyncIterator[RunningControlPlane]:
        config = ControlPlaneConfig(
            listen="127.0.0.1:0",
            db_url=f"sqlite:///{db or tmp_path / 'h2k.db'}",
            tick_seconds=0.2,
            reattach_delays=(0.0, 0.1, 0.2),
            grace_seconds=0.5,
            watch_buffer=watch_buffer,
            **settings,
        )
        control_plane = ControlPlane(config)
        port = await control_plane.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield RunningControlPlane(
                control_plane,
                services_pb2_grpc.JobServiceStub(channel),
                services_pb2_grpc.AgentRegistryStub(channel),
                channel,
            )
        finally:
            await channel.close(None)
            await control_plane.stop()

    return start


# --- the test-double agent -------------------------------------------------------------


@dataclass
class FakeJob:
    """One job's event log on the fake agent, as the real agent keeps it."""

    events: list[job_pb2.ProgressEvent] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)


class FakeWorker(services_pb2_grpc.WorkerServicer):
    """Runs a scripted job: RUNNING, PROGRESSING 20%, (gate), 40/60/80%, COMPLETED.

    The job waits at the gate until the test calls ``release()``, so tests can act while it
    runs without sleeping.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.jobs: dict[str, FakeJob] = {}
        self.gate = asyncio.Event()
        self.reject: grpc.StatusCode | None = None
        # Jobs that end FAILED (code TOOL_FAILED) instead of COMPLETED once released.
        self.fail_jobs: set[str] = set()
        self.executed: list[job_pb2.JobSpec] = []
        self.execute_calls = 0
        self.attach_calls = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def release(self) -> None:
        self.gate.set()

    async def ExecuteJob(self, request, context):
        self.execute_calls += 1
        if self.reject is not None:
            await context.abort(self.reject, "agent is full")
        job_id = request.spec.job_id
        self.executed.append(request.spec)
        self.jobs[job_id] = job = FakeJob()
        task = asyncio.create_task(self._run(job_id, job, request.start_seq or 1, request.attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        async for event in self._follow(job, after_seq=0):
            yield event

    async def AttachJob(self, request, context):
        self.attach_calls += 1
        job = self.jobs.get(request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        async for event in self._follow(job, request.after_seq):
            yield event

    async def CancelJob(self, request, context):
        job = self.jobs.get(request.job_id)
        if job is None:
            return services_pb2.WorkerCancelJobResponse(found=False)
        job.cancel.set()
        return services_pb2.WorkerCancelJobResponse(found=True, state=job_pb2.JOB_STATE_RUNNING)

    async def _run(self, job_id: str, job: FakeJob, seq: int, attempt: int) -> None:
        async def emit(state: job_pb2.JobState, phase: str, percent: float, **extra: Any) -> None:
            nonlocal seq
            event = job_pb2.ProgressEvent(
                job_id=job_id,
                seq=seq,
                state=state,
                phase=phase,
                progress_percent=percent,
                attempt=attempt,
                agent=self.name,
                message=f"{phase} {percent:.0f}%",
                **extra,
            )
            event.time.FromDatetime(utcnow())
            seq += 1
            async with job.changed:
                job.events.append(event)
                job.changed.notify_all()

        await emit(job_pb2.JOB_STATE_RUNNING, "start", 0)
        await emit(job_pb2.JOB_STATE_PROGRESSING, "convert", 20)
        released = asyncio.ensure_future(self.gate.wait())
        cancelled = asyncio.ensure_future(job.cancel.wait())
        await asyncio.wait({released, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        released.cancel()
        cancelled.cancel()
        if job.cancel.is_set():
            error = job_pb2.JobError(phase="convert", code="CANCELLED", message="cancelled")
            result = job_pb2.JobResult(error=error)
            await emit(job_pb2.JOB_STATE_CANCELLED, "convert", 20, result=result)
            return
        for percent in (40, 60, 80):
            await emit(job_pb2.JOB_STATE_PROGRESSING, "convert", percent)
        if job_id in self.fail_jobs:
            error = job_pb2.JobError(phase="convert", code="TOOL_FAILED", message="disk is bad")
            await emit(
                job_pb2.JOB_STATE_FAILED, "convert", 80, result=job_pb2.JobResult(error=error)
            )
            return
        output = job_pb2.JobOutput(kind="image", path="/data/output/vm.qcow2", format="qcow2")
        result = job_pb2.JobResult(outputs=[output])
        await emit(job_pb2.JOB_STATE_COMPLETED, "done", 100, result=result)

    @staticmethod
    async def _follow(job: FakeJob, after_seq: int) -> AsyncIterator[job_pb2.ProgressEvent]:
        sent = after_seq
        while True:
            async with job.changed:
                await job.changed.wait_for(partial(_has_events_after, job, sent))
                fresh = [e for e in job.events if e.seq > sent]
            for event in fresh:
                sent = event.seq
                yield event
                if event.state in (
                    job_pb2.JOB_STATE_COMPLETED,
                    job_pb2.JOB_STATE_FAILED,
                    job_pb2.JOB_STATE_CANCELLED,
                ):
                    return


def _has_events_after(job: FakeJob, seq: int) -> bool:
    return bool(job.events) and job.events[-1].seq > seq


@dataclass
class RunningWorker:
    worker: FakeWorker
    address: str
    server: grpc.aio.Server


@pytest.fixture
def start_worker() -> Callable[..., Any]:
    """``async with start_worker("node-1") as agent:`` serves a FakeWorker on loopback."""

    @asynccontextmanager
    async def start(name: str = "node-1") -> AsyncIterator[RunningWorker]:
        worker = FakeWorker(name)
        server = grpc.aio.server()
        services_pb2_grpc.add_WorkerServicer_to_server(worker, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            yield RunningWorker(worker, f"127.0.0.1:{port}", server)
        finally:
            await server.stop(0)

    return start


class Kit:
    """Helpers handed to tests by the ``kit`` fixture."""

    job_document = staticmethod(job_document)
    spec_message = staticmethod(spec_message)
    eventually = staticmethod(eventually)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
