"""Assigning a scheduling pass's jobs in one store call, for SQLite and PostgreSQL alike:
what moves, what is left alone, and that no job is ever assigned twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from controlplane.store import Assignment
from protocol.states import JobState

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


async def queue(store, build, *job_ids: str) -> None:
    await store.create_jobs([build.job_spec(j) for j in job_ids], NOW)


async def test_a_pass_is_stored_as_assigned_jobs_with_their_history(backend, build):
    async with backend.opened() as store:
        await queue(store, build, "a", "b", "c")
        moved = await store.assign_jobs(
            [Assignment("b", "node-2", 1), Assignment("a", "node-1", 1)]
        )
        stored = {j: await store.get_job(j) for j in ("a", "b", "c")}
        running = await store.running_jobs_by_agent()
    assert [j.job_id for j in moved] == ["b", "a"]  # in the order asked
    for job, agent in ((moved[0], "node-2"), (moved[1], "node-1")):
        assert job == stored[job.job_id]  # the answer is what was committed
        assert job.state is JobState.ASSIGNED and job.assigned_agent == agent
        assert job.attempt == 1 and job.queue_reason == ""
        last = job.history[-1]
        assert (last.from_state, last.to_state) == (JobState.QUEUED, JobState.ASSIGNED)
        assert last.reason == f"assigned to agent {agent}" and last.attempt == 1
        assert job.spec == build.job_spec(job.job_id)
    assert stored["c"].state is JobState.QUEUED and stored["c"].assigned_agent is None
    assert running == {"node-1": ["a"], "node-2": ["b"]}


async def test_jobs_no_longer_queued_or_unknown_are_left_alone(backend, build):
    async with backend.opened() as store:
        await queue(store, build, "kept", "cancelled", "taken")
        await store.transition("cancelled", JobState.CANCELLED, "not needed")
        await store.assign_jobs([Assignment("taken", "node-1", 1)])
        moved = await store.assign_jobs(
            [
                Assignment("cancelled", "node-2", 1),
                Assignment("taken", "node-2", 1),
                Assignment("nobody", "node-2", 1),
                Assignment("kept", "node-2", 1),
            ]
        )
        cancelled, taken = await store.get_job("cancelled"), await store.get_job("taken")
        nothing = await store.assign_jobs([])
    assert [j.job_id for j in moved] == ["kept"]
    assert cancelled.state is JobState.CANCELLED and cancelled.assigned_agent is None
    assert taken.assigned_agent == "node-1" and taken.attempt == 1
    assert [t.to_state for t in taken.history].count(JobState.ASSIGNED) == 1
    assert nothing == []


async def test_two_stores_assigning_the_same_jobs_at_once_assign_each_once(backend, build):
    # With PostgreSQL these are two replicas' stores on one database.
    ids = [f"job-{i:03d}" for i in range(60)]
    async with backend.opened() as first, backend.opened() as second:
        await queue(first, build, *ids)
        moved_first, moved_second = await asyncio.gather(
            first.assign_jobs([Assignment(j, "node-1", 1) for j in ids]),
            second.assign_jobs([Assignment(j, "node-2", 1) for j in reversed(ids)]),
        )
        stored = [await first.get_job(j) for j in ids]
    assert sorted(j.job_id for j in [*moved_first, *moved_second]) == ids
    won = {j.job_id: j.assigned_agent for j in [*moved_first, *moved_second]}
    for job in stored:
        assert job.state is JobState.ASSIGNED and job.assigned_agent == won[job.job_id]
        assert [t.to_state for t in job.history].count(JobState.ASSIGNED) == 1


async def test_one_agents_jobs_and_the_counts_match_the_whole_map(backend, build):
    """The per-agent answers the heartbeats and the scheduler use agree with
    running_jobs_by_agent: active jobs only, in its order."""
    async with backend.opened() as store:
        await queue(store, build, "a", "b", "c", "d", "e")
        await store.assign_jobs(
            [
                Assignment("c", "node-1", 1),
                Assignment("a", "node-1", 1),
                Assignment("b", "node-2", 1),
                Assignment("d", "node-1", 1),
            ]
        )
        await store.transition("d", JobState.CANCELLED, "cancelled")  # no longer active
        await store.transition("c", JobState.RUNNING, "started", started_at=NOW)
        whole = await store.running_jobs_by_agent()
        of_one = {n: await store.running_jobs_of(n) for n in ("node-1", "node-2", "node-3")}
        counts = await store.count_running_jobs()
    assert whole == {"node-1": ["a", "c"], "node-2": ["b"]}
    assert of_one == {"node-1": ["a", "c"], "node-2": ["b"], "node-3": []}
    assert counts == {"node-1": 2, "node-2": 1}
