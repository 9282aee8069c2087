"""The store contract of record_progress, for SQLite and PostgreSQL alike: the progress runs of
many jobs are committed in one transaction, each event once, a missing job leaves no trace."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controlplane.store import JobMark, JobStore, ProgressWrite
from protocol.states import JobState
from tests.store.test_store_contract import event, read_other_connection

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


async def _progressing(store: JobStore, build, job_id: str) -> None:
    await store.create_job(build.job_spec(job_id), NOW)
    await store.transition(job_id, JobState.ASSIGNED, "assigned", assigned_agent="n1", attempt=1)
    await store.transition(job_id, JobState.RUNNING, "started", started_at=NOW, last_seq=1)
    await store.transition(job_id, JobState.PROGRESSING, "convert", last_seq=2)


def _write(job_id: str, seqs: range, percent: float = 10.0) -> ProgressWrite:
    return ProgressWrite(
        job_id=job_id,
        events=[event(job_id, seq) for seq in seqs],
        last_seq=seqs[-1],
        phase="convert",
        progress_percent=percent,
    )


async def test_runs_of_many_jobs_are_committed_together(backend, build):
    async with backend.opened() as store:
        for job_id in ("job-1", "job-2", "job-3"):
            await _progressing(store, build, job_id)
        await store.update_job("job-2", cancel_requested=True)
        found = await store.record_progress(
            [_write("job-1", range(3, 6), 42.5), _write("job-2", range(3, 4), 7.0)]
        )
        assert set(found) == {"job-1", "job-2"}
        assert found["job-1"].state is JobState.PROGRESSING
        assert (found["job-1"].attempt, found["job-1"].assigned_agent) == (1, "n1")
        assert not found["job-1"].cancel_requested
        assert found["job-2"].cancel_requested  # the committed flag, not a cached one
        # Read through another connection while the store is open: committed.
        stored = read_other_connection(
            backend, "SELECT job_id, seq FROM job_events WHERE seq > 2 ORDER BY job_id, seq"
        )
        assert [tuple(r) for r in stored] == [
            ("job-1", 3),
            ("job-1", 4),
            ("job-1", 5),
            ("job-2", 3),
        ]
        jobs = {j.job_id: j for j in (await store.list_jobs()).jobs}
        assert (jobs["job-1"].last_seq, jobs["job-1"].progress_percent) == (5, 42.5)
        assert (jobs["job-2"].last_seq, jobs["job-2"].progress_percent) == (3, 7.0)
        assert (jobs["job-3"].last_seq, jobs["job-3"].state) == (2, JobState.PROGRESSING)
        assert [e.seq for e in await store.list_events("job-1", after_seq=2)] == [3, 4, 5]
        assert found["job-1"].updated_at == jobs["job-1"].updated_at


async def test_an_event_stored_already_is_kept_once(backend, build):
    async with backend.opened() as store:
        await _progressing(store, build, "job-1")
        await store.record_progress([_write("job-1", range(3, 5))])
        await store.record_progress([_write("job-1", range(4, 7))])
        assert [e.seq for e in await store.list_events("job-1")] == [3, 4, 5, 6]


async def test_a_job_the_store_lacks_is_left_out_and_the_others_are_stored(backend, build):
    async with backend.opened() as store:
        await _progressing(store, build, "job-1")
        writes = [_write("ghost", range(1, 3)), _write("job-1", range(3, 4))]
        found = await store.record_progress(writes)
        assert set(found) == {"job-1"}
        assert await store.list_events("ghost") == []
        assert [e.seq for e in await store.list_events("job-1", after_seq=2)] == [3]


@pytest.mark.parametrize(
    "writes",
    [
        [_write("job-1", range(3, 4)), _write("job-1", range(4, 5))],
        [ProgressWrite("job-1", [event("job-2", 3)], 3, "convert", 1.0)],
    ],
    ids=["a job twice", "an event of another job"],
)
async def test_a_malformed_write_stores_nothing(backend, build, writes):
    async with backend.opened() as store:
        await _progressing(store, build, "job-1")
        with pytest.raises(ValueError):
            await store.record_progress(writes)
        assert await store.list_events("job-1", after_seq=2) == []
        assert (await store.get_job("job-1")).last_seq == 2


async def test_a_write_that_follows_a_job_that_moved_stores_nothing_of_it(backend, build):
    async with backend.opened() as store:
        for job_id in ("job-1", "job-2", "job-3"):
            await _progressing(store, build, job_id)
        # job-2 moved on since its writer read it (another replica ended the attempt).
        await store.transition("job-2", JobState.RETRYING, "agent lost", last_seq=3)
        found = await store.record_progress(
            [
                replace(_write("job-1", range(3, 5)), follows=JobMark(2, 1, JobState.PROGRESSING)),
                replace(_write("job-2", range(3, 5)), follows=JobMark(2, 1, JobState.PROGRESSING)),
                replace(_write("job-3", range(3, 4)), follows=JobMark(2, 2, JobState.PROGRESSING)),
            ]
        )
        assert {j: s.written for j, s in found.items()} == {
            "job-1": True,
            "job-2": False,  # its last_seq and state moved
            "job-3": False,  # another attempt
        }
        assert (found["job-2"].state, found["job-2"].last_seq) == (JobState.RETRYING, 3)
        stored = read_other_connection(
            backend, "SELECT job_id, seq FROM job_events WHERE seq > 2 ORDER BY job_id, seq"
        )
        assert [tuple(r) for r in stored] == [("job-1", 3), ("job-1", 4)]
        jobs = {j.job_id: j for j in (await store.list_jobs()).jobs}
        assert (jobs["job-2"].last_seq, jobs["job-3"].last_seq) == (3, 2)


async def test_texts_and_numbers_are_stored_exactly_as_written(backend, build):
    # What a progress write stores comes back as written: the same phase text, the same
    # float to the last bit, the same event (a write path that went through text or JSON
    # and lost escapes, non-ASCII or float digits would fail here).
    odd_text = 'réparation "disque" \\ 磁盘 😀 \t end'
    percents = [100 / 3, 0.1 + 0.2, 1e-7, 99.99999999999999]
    async with backend.opened() as store:
        writes = []
        for n, percent in enumerate(percents):
            job_id = f"job-{n}"
            await _progressing(store, build, job_id)
            events = [event(job_id, 3)]
            events[0].message = odd_text
            events[0].details["note"] = odd_text
            writes.append(
                ProgressWrite(
                    job_id=job_id,
                    events=events,
                    last_seq=3,
                    phase=odd_text,
                    progress_percent=percent,
                )
            )
        await store.record_progress(writes)
        for n, (write, percent) in enumerate(zip(writes, percents, strict=True)):
            job = await store.get_job(f"job-{n}")
            assert (job.phase, job.progress_percent, job.last_seq) == (odd_text, percent, 3)
            assert await store.list_events(f"job-{n}", after_seq=2) == write.events
