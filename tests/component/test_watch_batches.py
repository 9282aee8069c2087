"""WatchJobBatches beside WatchJob: a busy job's events reach every watcher once, in seq
order, several to a message; a lagging watcher catches up from the store."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc
from tests.component.conftest import FakeJob, FakeWorker

BURST = 400


class BurstWorker(FakeWorker):
    """RUNNING, then (once released) BURST progress events at once, then COMPLETED."""

    async def _run(self, job_id: str, job: FakeJob, seq: int, attempt: int) -> None:
        def event(state: Any, percent: float) -> job_pb2.ProgressEvent:
            return job_pb2.ProgressEvent(
                job_id=job_id,
                seq=seq,
                state=state,
                phase="convert",
                progress_percent=percent,
                attempt=attempt,
                agent=self.name,
            )

        async with job.changed:
            job.events.append(event(job_pb2.JOB_STATE_RUNNING, 0))
            job.changed.notify_all()
        await self.gate.wait()
        async with job.changed:
            for i in range(BURST):
                seq += 1
                job.events.append(event(job_pb2.JOB_STATE_PROGRESSING, 100 * i / BURST))
            seq += 1
            done = event(job_pb2.JOB_STATE_COMPLETED, 100)
            done.result.outputs.add(kind="image", path="/data/output/vm.qcow2", format="qcow2")
            job.events.append(done)
            job.changed.notify_all()


async def watch_batches(cp, after_seq: int = 0) -> list[list[int]]:
    request = services_pb2.WatchJobRequest(job_id="job-1", after_seq=after_seq)
    return [[e.seq for e in batch.events] async for batch in cp.jobs.WatchJobBatches(request)]


async def watch_events(cp) -> list[int]:
    request = services_pb2.WatchJobRequest(job_id="job-1")
    return [event.seq async for event in cp.jobs.WatchJob(request)]


# With no buffer every live event makes the watchers lag: they catch up from the store.
@pytest.mark.parametrize("watch_buffer", [8192, 0])
async def test_every_watcher_sees_every_event_once_in_order(start_control_plane, kit, watch_buffer):
    worker = BurstWorker("node-1")
    async with start_control_plane(watch_buffer=watch_buffer) as cp:
        server = await _serve(worker)
        try:
            await cp.submit(kit.job_document("job-1"))
            await cp.register("node-1", server[1])
            await cp.job_in("job-1", job_pb2.JOB_STATE_RUNNING)
            watchers = [
                asyncio.create_task(watch_batches(cp)),
                asyncio.create_task(watch_batches(cp)),
                asyncio.create_task(watch_events(cp)),
            ]

            async def all_attached() -> bool:
                return cp.control_plane._hub.subscriber_count("job-1") == len(watchers)

            await kit.eventually(all_attached, "the watchers to subscribe")
            worker.release()
            first, second, single = await asyncio.wait_for(asyncio.gather(*watchers), 20)
            late = await watch_batches(cp)
            resumed = await watch_batches(cp, after_seq=BURST)
            done = await cp.job_in("job-1", job_pb2.JOB_STATE_COMPLETED)
        finally:
            await server[0].stop(0)
    every = list(range(1, BURST + 3))
    assert [seq for batch in first for seq in batch] == every
    assert [seq for batch in second for seq in batch] == every
    assert single == every
    assert all(batch for batch in first + second)  # no empty message
    # After the end, the whole stored history comes back in one message.
    assert late == [every]
    assert resumed == [[BURST + 1, BURST + 2]]
    assert done.last_seq == BURST + 2
    assert done.progress_percent == 100


async def test_watch_batches_of_an_unknown_job_is_not_found(start_control_plane):
    async with start_control_plane() as cp:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await watch_batches(cp)
    assert error.value.code() is grpc.StatusCode.NOT_FOUND
    assert "job job-1 not found" in (error.value.details() or "")


async def _serve(worker: FakeWorker) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    services_pb2_grpc.add_WorkerServicer_to_server(worker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
