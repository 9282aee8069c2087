"""A replica's progress recorder keeps each job's record between batches; another replica may
move the job meanwhile. Its writes must then store nothing of the old attempt, on real
PostgreSQL with two stores open on one database (as two replicas have)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from controlplane.events import EventHub
from controlplane.progress import ProgressRecorder
from controlplane.store import JobStore
from protocol.gen.h2k.v1 import job_pb2
from protocol.states import JobState
from tests.store.test_store_contract import event, read_other_connection

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _event(job_id: str, seq: int, state=job_pb2.JOB_STATE_PROGRESSING) -> job_pb2.ProgressEvent:
    e = event(job_id, seq, state)
    e.attempt, e.agent = 1, "n1"
    return e


@asynccontextmanager
async def _two_replicas(backend, build) -> AsyncIterator[tuple[ProgressRecorder, JobStore]]:
    """A recorder on one store with job-1 RUNNING (attempt 1 on n1), and another store."""
    if backend.name != "postgresql":
        pytest.skip("one control plane per SQLite file")
    async with backend.opened() as relay, backend.opened() as other:
        await relay.create_job(build.job_spec("job-1"), NOW)
        await relay.transition("job-1", JobState.ASSIGNED, "placed", assigned_agent="n1", attempt=1)
        recorder = ProgressRecorder(relay, EventHub())
        await recorder.record_batch([_event("job-1", 1, job_pb2.JOB_STATE_RUNNING)])
        yield recorder, other


async def test_a_batch_after_another_replica_ended_the_attempt_stores_nothing(backend, build):
    async with _two_replicas(backend, build) as (recorder, other):
        await recorder.record_batch([_event("job-1", 2), _event("job-1", 3)])  # record kept
        # The other replica ends the attempt (its agent was lost) and queues it again.
        await other.transition("job-1", JobState.RETRYING, "agent lost", last_seq=4)
        await other.transition("job-1", JobState.QUEUED, "retry", attempt=2, assigned_agent=None)
        job = await recorder.record_batch([_event("job-1", 4), _event("job-1", 5)])
        assert (job.state, job.attempt, job.last_seq) == (JobState.QUEUED, 2, 4)
        stored = read_other_connection(
            backend, "SELECT seq FROM job_events WHERE job_id = 'job-1' ORDER BY seq"
        )
        assert [r[0] for r in stored] == [1, 2, 3]  # nothing of the old attempt after it ended
        # A state change of the old attempt is not applied either.
        done = await recorder.record_batch([_event("job-1", 6, job_pb2.JOB_STATE_COMPLETED)])
        assert (done.state, done.attempt) == (JobState.QUEUED, 2)


async def test_a_batch_after_another_replica_wrote_an_event_goes_on_from_it(backend, build):
    async with _two_replicas(backend, build) as (recorder, other):
        await recorder.record_batch([_event("job-1", 2)])
        # Another replica relayed seq 3 meanwhile (a hand-over): this one must not repeat it.
        other_recorder = ProgressRecorder(other, EventHub())
        await other_recorder.record_batch([_event("job-1", 3)])
        job = await recorder.record_batch([_event("job-1", 3), _event("job-1", 4)])
        assert job.last_seq == 4
        stored = read_other_connection(
            backend, "SELECT seq FROM job_events WHERE job_id = 'job-1' ORDER BY seq"
        )
        assert [r[0] for r in stored] == [1, 2, 3, 4]
