"""The dispatch path: a job runs on a (test-double) agent, its events are stored and watched."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
import pytest

from protocol.gen.h2k.v1 import job_pb2, services_pb2


async def watch(cp, job_id: str, seen: list[job_pb2.ProgressEvent], after_seq: int = 0) -> None:
    request = services_pb2.WatchJobRequest(job_id=job_id, after_seq=after_seq)
    async for event in cp.jobs.WatchJob(request):
        seen.append(event)


# With no buffer every live event makes the watchers lag: they catch up from the store.
@pytest.mark.parametrize("watch_buffer", [256, 0])
async def test_a_job_runs_to_completion_and_every_watcher_sees_every_event_once(
    start_control_plane, start_worker, kit, tmp_path, watch_buffer
):
    async with (
        start_worker("node-1") as agent,
        start_control_plane(watch_buffer=watch_buffer) as cp,
    ):
        await cp.submit(kit.job_document("job-1"))
        await cp.register("node-1", agent.address)
        running = await cp.job_in("job-1", job_pb2.JOB_STATE_PROGRESSING)
        assert running.assigned_agent == "node-1"
        assert running.attempt == 1

        first: list[job_pb2.ProgressEvent] = []
        second: list[job_pb2.ProgressEvent] = []
        watchers = [
            asyncio.create_task(watch(cp, "job-1", first)),
            asyncio.create_task(watch(cp, "job-1", second)),
        ]

        async def both_replayed() -> bool:
            return len(first) >= 2 and len(second) >= 2

        await kit.eventually(both_replayed, "both watchers to replay the stored events")
        agent.worker.release()
        await asyncio.wait_for(asyncio.gather(*watchers), timeout=10)

        done = await cp.job("job-1")
        late: list[job_pb2.ProgressEvent] = []
        await watch(cp, "job-1", late, after_seq=3)
        listed = await cp.jobs.ListJobEvents(services_pb2.ListJobEventsRequest(job_id="job-1"))

    assert [e.seq for e in first] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in second] == [1, 2, 3, 4, 5, 6]
    assert first[-1].state == job_pb2.JOB_STATE_COMPLETED
    assert [e.seq for e in late] == [4, 5, 6]
    assert [e.seq for e in listed.events] == [1, 2, 3, 4, 5, 6]
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert done.result.outputs[0].path == "/data/output/vm.qcow2"
    assert done.last_seq == 6
    assert done.progress_percent == 100
    assert done.HasField("started_at") and done.HasField("finished_at")
    path = [job_pb2.JobState.Name(t.to_state) for t in done.history]
    assert path == [
        "JOB_STATE_VALIDATED",
        "JOB_STATE_QUEUED",
        "JOB_STATE_ASSIGNED",
        "JOB_STATE_RUNNING",
        "JOB_STATE_PROGRESSING",
        "JOB_STATE_COMPLETED",
    ]
    with sqlite3.connect(tmp_path / "h2k.db") as db:
        rows = db.execute("SELECT seq FROM job_events WHERE job_id = 'job-1' ORDER BY seq")
        assert [seq for (seq,) in rows] == [1, 2, 3, 4, 5, 6]


async def test_cancelling_a_running_job_goes_through_its_agent(
    start_control_plane, start_worker, kit
):
    async with start_worker("node-1") as agent, start_control_plane() as cp:
        await cp.submit(kit.job_document("job-1"))
        await cp.register("node-1", agent.address)
        await cp.job_in("job-1", job_pb2.JOB_STATE_PROGRESSING)
        answer = await cp.jobs.CancelJob(
            services_pb2.CancelJobRequest(job_id="job-1", reason="operator")
        )
        assert answer.cancel_requested
        cancelled = await cp.job_in("job-1", job_pb2.JOB_STATE_CANCELLED)
    assert cancelled.result.error.code == "CANCELLED"
    assert cancelled.last_seq == 3


async def test_a_job_the_agent_does_not_accept_goes_back_to_the_queue(
    start_control_plane, start_worker, kit
):
    async with start_worker("node-1") as agent, start_control_plane() as cp:
        agent.worker.reject = grpc.StatusCode.RESOURCE_EXHAUSTED
        await cp.submit(kit.job_document("job-1"))
        await cp.register("node-1", agent.address)

        async def requeued() -> job_pb2.Job | None:
            job = await cp.job("job-1")
            return job if agent.worker.execute_calls and job.queue_reason else None

        job = await kit.eventually(requeued, "the job to be requeued")
        assert job.state == job_pb2.JOB_STATE_QUEUED
        assert job.queue_reason.startswith("agent node-1 did not accept the job")
        assert "RESOURCE_EXHAUSTED" in job.queue_reason

        agent.worker.reject = None
        agent.worker.release()
        done = await cp.job_in("job-1", job_pb2.JOB_STATE_COMPLETED)
    # The refused dispatch ran nothing, so it did not use up an attempt.
    assert done.attempt == 1
    assert agent.worker.execute_calls >= 2


async def test_a_lost_agent_fails_the_job_saying_where_it_was(
    start_control_plane, start_worker, kit
):
    # The agent never heartbeats: its lease (2 s) runs out once the stream breaks.
    async with start_control_plane(lease_seconds=2, heartbeat_interval_seconds=1) as cp:
        async with start_worker("node-1") as agent:
            await cp.submit(kit.job_document("job-1"))
            await cp.register("node-1", agent.address)
            await cp.job_in("job-1", job_pb2.JOB_STATE_PROGRESSING)
        failed = await cp.job_in("job-1", job_pb2.JOB_STATE_FAILED)
    assert failed.result.error.message == "agent node-1 lost during convert at 20%"
    assert failed.history[-1].reason.startswith("agent node-1 lost during convert at 20%")
    assert failed.result.error.code == "AGENT_LOST"


async def test_a_restarted_control_plane_reattaches_and_loses_nothing(
    start_control_plane, start_worker, kit
):
    async with start_worker("node-1") as agent:
        async with start_control_plane() as cp:
            await cp.submit(kit.job_document("job-1"))
            await cp.register("node-1", agent.address)
            await cp.job_in("job-1", job_pb2.JOB_STATE_PROGRESSING)
        # The agent kept running the job while no control plane was there.
        agent.worker.release()
        async with start_control_plane() as cp:
            done = await cp.job_in("job-1", job_pb2.JOB_STATE_COMPLETED)
            listed = await cp.jobs.ListJobEvents(services_pb2.ListJobEventsRequest(job_id="job-1"))
    assert agent.worker.attach_calls >= 1
    assert agent.worker.execute_calls == 1
    assert [e.seq for e in listed.events] == [1, 2, 3, 4, 5, 6]
    assert done.last_seq == 6
