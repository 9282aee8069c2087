"""Lightweight fake agents for the control-plane benchmarks, all in one child process.

Each agent is its own grpc.aio Worker server on a distinct loopback port. ExecuteJob notes
when the job arrived and completes it at once (RUNNING, then COMPLETED); with ``events_per_s``
it instead emits PROGRESSING events at that rate, each stamped with its send time in
``details["sent_ns"]`` (time.time_ns(), one clock for every process on the machine).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc

from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc


@dataclass
class Plan:
    """What every agent does with a job."""

    events: int = 0  # PROGRESSING events between RUNNING and COMPLETED
    events_per_s: float = 0.0
    lead_in: float = 0.0  # pause after RUNNING (watchers attach meanwhile)


def progress_event(
    request: Any, agent: str, seq: int, state: int, percent: float
) -> job_pb2.ProgressEvent:
    """An event as a fake agent sends it, stamped with its send time (``details.sent_ns``)."""
    event = job_pb2.ProgressEvent(
        job_id=request.spec.job_id,
        seq=seq,
        state=state,  # type: ignore[arg-type]
        phase="convert",
        progress_percent=percent,
        attempt=request.attempt,
        agent=agent,
    )
    event.time.GetCurrentTime()
    event.details["sent_ns"] = str(time.time_ns())
    return event


class FakeAgent(services_pb2_grpc.WorkerServicer):
    def __init__(self, name: str, plan: Plan, arrivals: dict[str, float]) -> None:
        self.name = name
        self.plan = plan
        self.arrivals = arrivals

    def _event(self, request: Any, seq: int, state: int, percent: float) -> job_pb2.ProgressEvent:
        return progress_event(request, self.name, seq, state, percent)

    async def ExecuteJob(
        self, request: services_pb2.ExecuteJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[job_pb2.ProgressEvent]:
        self.arrivals[request.spec.job_id] = time.time()
        seq = request.start_seq or 1
        yield self._event(request, seq, job_pb2.JOB_STATE_RUNNING, 0)
        if self.plan.lead_in:
            await asyncio.sleep(self.plan.lead_in)  # lets the benchmark's watchers attach
        start = time.monotonic()
        for i in range(self.plan.events):
            due = start + i / self.plan.events_per_s
            pause = due - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)  # pacing the emission rate, not synchronisation
            seq += 1
            yield self._event(
                request, seq, job_pb2.JOB_STATE_PROGRESSING, 100 * i / self.plan.events
            )
        seq += 1
        done = self._event(request, seq, job_pb2.JOB_STATE_COMPLETED, 100)
        done.result.outputs.add(kind="image", path="/data/output/vm.qcow2", format="qcow2")
        yield done

    async def CancelJob(
        self, request: services_pb2.WorkerCancelJobRequest, context: grpc.aio.ServicerContext
    ) -> services_pb2.WorkerCancelJobResponse:
        return services_pb2.WorkerCancelJobResponse(found=False)


def _serve(count: int, plan: Plan, conn: Connection) -> None:
    """Child process: serve ``count`` agents, send their addresses, then arrivals on request."""

    async def serve() -> None:
        arrivals: dict[str, float] = {}
        servers = []
        addresses = []
        for i in range(count):
            server = grpc.aio.server()
            name = f"fake-{i:03d}"
            services_pb2_grpc.add_WorkerServicer_to_server(FakeAgent(name, plan, arrivals), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            servers.append(server)
            addresses.append((name, f"127.0.0.1:{port}"))
        conn.send(addresses)
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "arrivals":
                conn.send(dict(arrivals))
            elif command == "count":
                conn.send(len(arrivals))
            else:
                break
        for server in servers:
            await server.stop(None)

    asyncio.run(serve())


class FakeAgents:
    """``with FakeAgents(100) as agents:`` runs them in a child process."""

    def __init__(self, count: int, plan: Plan | None = None) -> None:
        self._parent, child = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(count, plan or Plan(), child), daemon=True
        )
        self.addresses: list[tuple[str, str]] = []

    def __enter__(self) -> FakeAgents:
        self._process.start()
        self.addresses = self._parent.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._parent.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def arrivals(self) -> dict[str, float]:
        """job_id -> when ExecuteJob arrived (time.time())."""
        self._parent.send("arrivals")
        result: dict[str, float] = self._parent.recv()
        return result

    def count(self) -> int:
        self._parent.send("count")
        return int(self._parent.recv())
