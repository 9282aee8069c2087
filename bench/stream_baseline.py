"""The floor for the fan-out benchmark: a bare grpc.aio JobService (own process) whose
WatchJob / WatchJobBatches stream events it makes up itself, at the benchmark's rate.

No agent, no store, no validation: only what Python grpc.aio costs to write the same messages
to the same number of watchers on this machine. A watch's job_id is ``<round>:<watchers>``:
the round's events start once that many watchers are attached (plus a short lead-in).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc

from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc

LEAD_IN_SECONDS = 0.5


@dataclass
class _Round:
    watchers: int
    queues: list[asyncio.Queue[job_pb2.ProgressEvent]] = field(default_factory=list)
    started: bool = False


class BareFanout(services_pb2_grpc.JobServiceServicer):
    """Generates one job's events per round and hands each to every watcher's queue."""

    def __init__(self, events: int, events_per_s: float) -> None:
        self.events = events
        self.events_per_s = events_per_s
        self.rounds: dict[str, _Round] = {}

    def _join(self, job_id: str) -> asyncio.Queue[job_pb2.ProgressEvent]:
        expected = int(job_id.rsplit(":", 1)[1])
        round_ = self.rounds.setdefault(job_id, _Round(expected))
        queue: asyncio.Queue[job_pb2.ProgressEvent] = asyncio.Queue()
        round_.queues.append(queue)
        if len(round_.queues) == round_.watchers and not round_.started:
            round_.started = True
            asyncio.get_running_loop().create_task(self._emit(job_id, round_))
        return queue

    async def _emit(self, job_id: str, round_: _Round) -> None:
        def publish(seq: int, state: Any, percent: float) -> None:
            event = job_pb2.ProgressEvent(
                job_id=job_id, seq=seq, state=state, phase="convert", progress_percent=percent
            )
            event.time.GetCurrentTime()
            event.details["sent_ns"] = str(time.time_ns())
            for queue in round_.queues:
                queue.put_nowait(event)

        publish(1, job_pb2.JOB_STATE_RUNNING, 0)
        await asyncio.sleep(LEAD_IN_SECONDS)  # the watchers see RUNNING before the clock runs
        start = time.monotonic()
        for i in range(self.events):
            pause = start + i / self.events_per_s - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)  # pacing the emission rate, not synchronisation
            publish(i + 2, job_pb2.JOB_STATE_PROGRESSING, 100 * i / self.events)
        publish(self.events + 2, job_pb2.JOB_STATE_COMPLETED, 100)
        del self.rounds[job_id]

    async def WatchJob(
        self, request: services_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[job_pb2.ProgressEvent]:
        queue = self._join(request.job_id)
        while True:
            event = await queue.get()
            yield event
            if event.state == job_pb2.JOB_STATE_COMPLETED:
                return

    async def WatchJobBatches(
        self, request: services_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[services_pb2.ProgressEventBatch]:
        queue = self._join(request.job_id)
        while True:
            events = [await queue.get()]
            while not queue.empty():
                events.append(queue.get_nowait())
            yield services_pb2.ProgressEventBatch(events=events)
            if events[-1].state == job_pb2.JOB_STATE_COMPLETED:
                return


def _serve(events: int, events_per_s: float, conn: Connection) -> None:
    async def serve() -> None:
        server = grpc.aio.server()
        services_pb2_grpc.add_JobServiceServicer_to_server(BareFanout(events, events_per_s), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        conn.send(f"127.0.0.1:{port}")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop(None)

    asyncio.run(serve())


class BareFanoutServer:
    """``with BareFanoutServer(events, rate) as address:`` serves it in a child process."""

    def __init__(self, events: int, events_per_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(events, events_per_s, child), daemon=True
        )

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def __enter__(self) -> str:
        self._process.start()
        address: str = self._parent.recv()
        return address

    def __exit__(self, *exc: object) -> None:
        self._parent.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
