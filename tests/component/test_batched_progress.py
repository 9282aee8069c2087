"""Recording an agent's events in batches (real SQLite store, real recorder and hub): each
event is stored once in seq order, watchers only ever hear of committed events, state changes
keep their order, and stale, foreign and gapped events are handled as one at a time."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.events import EventHub
from controlplane.progress import EventGap, ProgressRecorder
from controlplane.store import JobStore, open_store
from protocol.gen.h2k.v1 import job_pb2
from protocol.states import JobState
from tests.support.builders import job_spec

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
RUNNING = job_pb2.JOB_STATE_RUNNING
PROGRESSING = job_pb2.JOB_STATE_PROGRESSING


@dataclass
class CommittedOnlyHub(EventHub):
    """A hub that checks, at each publish, that the events are committed: it reads them
    through a connection of its own, as another process would."""

    db: Path = Path()
    published: list[int] = field(default_factory=list)
    terminal_states: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def _committed(self, sql: str, *params: object) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, params).fetchall()

    def publish_batch(self, events: Sequence[job_pb2.ProgressEvent]) -> None:
        stored = self._committed(
            "SELECT seq FROM job_events WHERE job_id = ? AND seq BETWEEN ? AND ?",
            events[0].job_id,
            events[0].seq,
            events[-1].seq,
        )
        assert [seq for (seq,) in stored] == [e.seq for e in events]
        self.published.extend(e.seq for e in events)
        super().publish_batch(events)

    def notify_terminal(self, job_id: str) -> None:
        (state,) = self._committed("SELECT state FROM jobs WHERE job_id = ?", job_id)[0]
        self.terminal_states.append(state)
        super().notify_terminal(job_id)


@asynccontextmanager
async def recorder_on(
    tmp_path: Path,
) -> AsyncIterator[tuple[ProgressRecorder, JobStore, CommittedOnlyHub]]:
    db = tmp_path / "h2k.db"
    store = await open_store(f"sqlite:///{db}")
    hub = CommittedOnlyHub(db=db)
    try:
        await store.create_job(job_spec("job-1"), NOW)
        await store.transition(
            "job-1", JobState.ASSIGNED, "assigned", assigned_agent="node-1", attempt=1
        )
        yield ProgressRecorder(store, hub), store, hub
    finally:
        await store.close()


def event(seq: int, state: int = PROGRESSING, **fields: object) -> job_pb2.ProgressEvent:
    fields.setdefault("attempt", 1)
    fields.setdefault("agent", "node-1")
    return job_pb2.ProgressEvent(
        job_id="job-1",
        seq=seq,
        state=state,  # type: ignore[arg-type]
        phase="convert",
        progress_percent=float(seq),
        **fields,  # type: ignore[arg-type]
    )


def completed(seq: int) -> job_pb2.ProgressEvent:
    done = event(seq, job_pb2.JOB_STATE_COMPLETED)
    done.result.outputs.add(kind="image", path="/data/output/vm.qcow2", format="qcow2")
    return done


async def test_a_batch_is_stored_once_in_order_with_its_state_changes(tmp_path):
    async with recorder_on(tmp_path) as (recorder, store, hub):
        first = await recorder.record_batch([event(1, RUNNING), *map(event, range(2, 200))])
        # A replay overlapping what is stored: the repeated seqs are skipped.
        job = await recorder.record_batch([*map(event, range(150, 300)), completed(300)])
        events = await store.list_events("job-1")
    assert first.state is JobState.PROGRESSING
    assert (first.last_seq, first.progress_percent) == (199, 199.0)
    assert [e.seq for e in events] == list(range(1, 301))
    assert hub.published == list(range(1, 301))
    assert hub.terminal_states == ["COMPLETED"]  # announced once the store had it
    assert job.state is JobState.COMPLETED
    assert job.last_seq == 300
    assert [t.to_state for t in job.history][2:] == [
        JobState.ASSIGNED,
        JobState.RUNNING,
        JobState.PROGRESSING,
        JobState.COMPLETED,
    ]


async def test_events_after_the_end_of_an_attempt_in_the_same_batch_are_ignored(tmp_path):
    async with recorder_on(tmp_path) as (recorder, store, hub):
        job = await recorder.record_batch(
            [event(1, RUNNING), event(2), completed(3), event(4), event(5)]
        )
        events = await store.list_events("job-1")
    assert job.state is JobState.COMPLETED
    assert [e.seq for e in events] == [1, 2, 3]
    assert hub.published == [1, 2, 3]


async def test_stale_and_foreign_events_are_skipped_within_a_batch(tmp_path):
    async with recorder_on(tmp_path) as (recorder, store, hub):
        job = await recorder.record_batch(
            [
                event(1, RUNNING),
                event(2, attempt=7),  # another attempt
                event(2, agent="node-9"),  # another agent
                event(2),
                event(1),  # applied already
                event(3),
            ]
        )
        events = await store.list_events("job-1")
    assert [(e.seq, e.attempt, e.agent) for e in events] == [
        (1, 1, "node-1"),
        (2, 1, "node-1"),
        (3, 1, "node-1"),
    ]
    assert job.last_seq == 3
    assert hub.published == [1, 2, 3]


async def test_a_gap_keeps_what_came_before_it_and_nothing_after(tmp_path):
    async with recorder_on(tmp_path) as (recorder, store, hub):
        with pytest.raises(EventGap) as gap:
            await recorder.record_batch([event(1, RUNNING), event(2), event(3), event(5)])
        job = await store.get_job("job-1")
        events = await store.list_events("job-1")
    assert (gap.value.expected, gap.value.got) == (4, 5)
    assert job.last_seq == 3
    assert [e.seq for e in events] == [1, 2, 3]
    assert hub.published == [1, 2, 3]


async def test_a_cancel_request_is_seen_by_the_next_batch(tmp_path):
    async with recorder_on(tmp_path) as (recorder, store, _hub):
        before = await recorder.record_batch([event(1, RUNNING), event(2)])
        await store.update_job("job-1", cancel_requested=True)
        after = await recorder.record_batch([event(3), event(4)])
    assert not before.cancel_requested
    assert after.cancel_requested
    assert after.last_seq == 4
