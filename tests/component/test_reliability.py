"""Leases, retries, pending cancels and the deadline backstop, against test-double agents.

The real-process versions (SIGKILL and all) are in tests/reliability; these pin down the
control plane's side of each rule quickly and exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from protocol.gen.h2k.v1 import job_pb2, services_pb2

FAST = {
    "lease_seconds": 2,
    "heartbeat_interval_seconds": 1,
    "retry_backoff_seconds": 0.1,
}


@contextlib.asynccontextmanager
async def heartbeating(cp, name: str) -> AsyncIterator[None]:
    """Keep an agent's lease fresh while the block runs."""

    async def beat() -> None:
        while True:
            await cp.registry.Heartbeat(services_pb2.HeartbeatRequest(name=name))
            await asyncio.sleep(0.3)  # the heartbeat period, not synchronisation

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_lost_agents_job_is_retried_elsewhere_with_seq_and_attempts_continuing(
    start_control_plane, start_worker, kit
):
    document = kit.job_document("job-1", execution_policy={"retry_count": 1})
    async with start_control_plane(**FAST) as cp, start_worker("node-2") as second:
        async with start_worker("node-1") as first:
            await cp.submit(document)
            await cp.register("node-1", first.address)
            await cp.job_in("job-1", job_pb2.JOB_STATE_PROGRESSING)
        # node-1 is gone (its server stopped); node-2 comes and stays.
        second.worker.release()
        await cp.register("node-2", second.address)
        async with heartbeating(cp, "node-2"):
            done = await cp.job_in("job-1", job_pb2.JOB_STATE_COMPLETED)
        events = (
            await cp.jobs.ListJobEvents(services_pb2.ListJobEventsRequest(job_id="job-1"))
        ).events
    assert done.assigned_agent == "node-2" and done.attempt == 2
    assert [e.seq for e in events] == list(range(1, 10))
    assert [e.attempt for e in events] == [1, 1, 1, 2, 2, 2, 2, 2, 2]
    lost = events[2]
    assert lost.state == job_pb2.JOB_STATE_FAILED and lost.agent == "node-1"
    assert lost.details["reported_by"] == "control-plane"
    assert lost.result.error.message == "agent node-1 lost during convert at 20%"
    path = [(job_pb2.JobState.Name(t.to_state)[10:], t.attempt) for t in done.history]
    assert path == [
        ("VALIDATED", 0),
        ("QUEUED", 0),
        ("ASSIGNED", 1),
        ("RUNNING", 1),
        ("PROGRESSING", 1),
        ("RETRYING", 1),
        ("QUEUED", 1),
        ("ASSIGNED", 2),
        ("RUNNING", 2),
        ("PROGRESSING", 2),
        ("COMPLETED", 2),
    ]


async def test_a_cancel_the_agent_cannot_confirm_waits_for_the_agent_or_its_lease(
    start_control_plane, start_worker, kit
):
    async with start_control_plane(**FAST) as cp:
        async with start_worker("node-1") as agent:
            await cp.submit(kit.job_document("job-1"))
            await cp.register("node-1", agent.address)
            await cp.job_in("job-1", job_pb2.JOB_STATE_PROGRESSING)
        answer = await cp.jobs.CancelJob(services_pb2.CancelJobRequest(job_id="job-1"))
        # Not CANCELLED yet: nobody confirmed that the job stopped and cleaned up.
        assert answer.state == job_pb2.JOB_STATE_PROGRESSING and answer.cancel_requested
        cancelled = await cp.job_in("job-1", job_pb2.JOB_STATE_CANCELLED)
    assert cancelled.result.error.code == "CANCELLED"
    assert cancelled.result.error.message == "cancelled: agent node-1 lost during convert at 20%"


async def test_the_control_plane_ends_an_attempt_past_its_deadline_if_the_agent_is_silent(
    start_control_plane, start_worker, kit
):
    # timeout_seconds 7200 scaled to 0.72 s, plus a 0.5 s margin; the agent heartbeats on
    # but its job never reports an end (it waits at the gate).
    settings = {**FAST, "timeout_scale": 0.0001, "timeout_margin_seconds": 0.5}
    async with start_worker("node-1") as agent, start_control_plane(**settings) as cp:
        await cp.submit(kit.job_document("job-1"))
        await cp.register("node-1", agent.address)
        async with heartbeating(cp, "node-1"):
            failed = await cp.job_in("job-1", job_pb2.JOB_STATE_FAILED)

            async def cancel_reached_the_agent() -> bool:
                return agent.worker.jobs["job-1"].cancel.is_set()

            await kit.eventually(cancel_reached_the_agent, "the agent to be told to cancel")
    error = failed.result.error
    assert (error.code, error.phase) == ("TIMEOUT", "convert")
    assert "ended by the control plane" in error.message
