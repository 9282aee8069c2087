"""The store contract of record_events, for SQLite and PostgreSQL alike: a run of progress
events and the job's new fields are committed together, once per seq, or not at all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlplane.store import JobStore
from protocol.errors import NotFound
from protocol.gen.h2k.v1 import job_pb2
from protocol.states import JobState
from tests.store.test_store_contract import event, read_other_connection

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


async def _progressing(store: JobStore, build, job_id: str = "job-1") -> None:
    await store.create_job(build.job_spec(job_id), NOW)
    await store.transition(job_id, JobState.ASSIGNED, "assigned", assigned_agent="n1", attempt=1)
    await store.transition(job_id, JobState.RUNNING, "started", started_at=NOW, last_seq=1)
    await store.transition(job_id, JobState.PROGRESSING, "convert", last_seq=2)


async def test_events_and_the_job_update_are_committed_together(backend, build):
    async with backend.opened() as store:
        await _progressing(store, build)
        batch = [event("job-1", seq) for seq in (3, 4, 5)]
        job = await store.record_events(
            "job-1", batch, last_seq=5, phase="convert", progress_percent=42.5
        )
        # Read through a separate connection while the store is still open: committed.
        seqs = read_other_connection(
            backend, "SELECT seq FROM job_events WHERE job_id = 'job-1' ORDER BY seq"
        )
        row = read_other_connection(
            backend, "SELECT state, last_seq, progress_percent FROM jobs WHERE job_id = 'job-1'"
        )
        listed = await store.list_events("job-1", after_seq=2)
    assert seqs == [(3,), (4,), (5,)]
    assert row == [("PROGRESSING", 5, 42.5)]
    assert (job.state, job.last_seq, job.progress_percent) == (JobState.PROGRESSING, 5, 42.5)
    # No history row for a run of progress: the state did not change.
    assert [t.to_state for t in job.history][-1] is JobState.PROGRESSING
    assert len(job.history) == 5
    assert [e.seq for e in listed] == [3, 4, 5]
    assert listed[0] == batch[0]


async def test_an_event_stored_already_is_kept_once(backend, build):
    async with backend.opened() as store:
        await _progressing(store, build)
        await store.append_event(event("job-1", 3))
        await store.record_events(
            "job-1", [event("job-1", 3), event("job-1", 4)], last_seq=4, progress_percent=5.0
        )
        again = await store.record_events("job-1", [event("job-1", 4)], last_seq=4)
        events = await store.list_events("job-1")
    assert [e.seq for e in events] == [3, 4]
    assert again.last_seq == 4
    assert again.progress_percent == 5.0  # fields not named stay as they were


async def test_an_unknown_job_stores_nothing(backend):
    async with backend.opened() as store:
        with pytest.raises(NotFound, match="job ghost not found"):
            await store.record_events("ghost", [event("ghost", 1)], last_seq=1)
        events = await store.list_events("ghost")
    assert events == []


@pytest.mark.parametrize(
    ("events", "updates", "message"),
    [
        ([event("job-1", 3), event("job-2", 4)], {"last_seq": 4}, "cannot include events"),
        ([event("job-1", 3)], {"last_seq": 3, "state": "COMPLETED"}, "cannot update"),
        ([event("job-1", 3)], {"last_seq": 3, "fingerprint": "x"}, "cannot update"),
    ],
)
async def test_a_refused_batch_changes_nothing(backend, build, events, updates, message):
    async with backend.opened() as store:
        await _progressing(store, build)
        with pytest.raises(ValueError, match=message):
            await store.record_events("job-1", events, **updates)
        job = await store.get_job("job-1")
        stored = await store.list_events("job-1")
    assert stored == []
    assert (job.state, job.last_seq) == (JobState.PROGRESSING, 2)


async def test_an_empty_batch_only_updates_the_job(backend, build):
    async with backend.opened() as store:
        await _progressing(store, build)
        job = await store.record_events("job-1", [], phase="verify")
    assert job.phase == "verify"
    assert job.state is JobState.PROGRESSING


async def test_a_terminal_event_in_a_batch_is_stored_but_moves_no_state(backend, build):
    # The recorder sends state changes through transition(); record_events stores what it
    # is given and leaves the state machine alone.
    async with backend.opened() as store:
        await _progressing(store, build)
        done = event("job-1", 3, job_pb2.JOB_STATE_COMPLETED)
        job = await store.record_events("job-1", [done], last_seq=3)
    assert job.state is JobState.PROGRESSING
    assert job.last_seq == 3
