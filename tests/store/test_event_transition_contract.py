"""An agent's state-changing event and the job's move in one transaction, and listing jobs
without their history, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from protocol.gen.h2k.v1 import job_pb2
from protocol.states import IllegalTransition, JobState
from tests.store.test_store_contract import event

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


async def _assigned(store, build, job_id: str = "job-1") -> None:
    await store.create_job(build.job_spec(job_id), NOW)
    await store.transition(job_id, JobState.ASSIGNED, "assigned", assigned_agent="n1", attempt=1)


async def test_a_transition_stores_its_event_with_it(backend, build):
    async with backend.opened() as store:
        await _assigned(store, build)
        running = event("job-1", 1, state=job_pb2.JOB_STATE_RUNNING)
        job = await store.transition(
            "job-1", JobState.RUNNING, "started", event=running, last_seq=1, started_at=NOW
        )
        # Stored once per seq: a replayed event with a field update changes nothing twice.
        again = await store.update_job("job-1", event=running, phase="convert")
        events = await store.list_events("job-1")
    assert job.state is JobState.RUNNING and job.last_seq == 1
    assert again.phase == "convert" and again.state is JobState.RUNNING
    assert [(e.seq, e.state) for e in events] == [(1, job_pb2.JOB_STATE_RUNNING)]


async def test_a_refused_transition_stores_neither_the_move_nor_its_event(backend, build):
    async with backend.opened() as store:
        await _assigned(store, build)
        done = event("job-1", 1, state=job_pb2.JOB_STATE_COMPLETED)
        with pytest.raises(IllegalTransition):
            await store.transition("job-1", JobState.VALIDATED, "back", event=done, last_seq=1)
        job, events = await store.get_job("job-1"), await store.list_events("job-1")
    assert job.state is JobState.ASSIGNED and job.last_seq == 0
    assert events == []


async def test_jobs_can_be_listed_without_their_history(backend, build):
    async with backend.opened() as store:
        await _assigned(store, build, "a")
        await store.create_job(build.job_spec("b"), NOW)
        full = await store.list_jobs(states=[JobState.ASSIGNED], limit=None)
        light = await store.list_jobs(states=[JobState.ASSIGNED], limit=None, with_history=False)
    assert [j.job_id for j in light.jobs] == [j.job_id for j in full.jobs] == ["a"]
    assert full.jobs[0].history and light.jobs[0].history == []
    assert dataclasses.replace(light.jobs[0], history=full.jobs[0].history) == full.jobs[0]
