"""The SQLite store: durability, idempotent submission, the state table, event dedup."""

from __future__ import annotations

import sqlite3
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.models import AgentRecord
from controlplane.store import open_store
from controlplane.store.sqlite_schema import SCHEMA_VERSION
from protocol.errors import AlreadyExists, NotFound
from protocol.gen.h2k.v1 import agent_pb2, job_pb2
from protocol.states import IllegalTransition, JobState

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@asynccontextmanager
async def opened(path):
    store = await open_store(f"sqlite:///{path}")
    try:
        yield store
    finally:
        await store.close()


def event(job_id: str, seq: int, state: job_pb2.JobState = job_pb2.JOB_STATE_PROGRESSING):
    return job_pb2.ProgressEvent(job_id=job_id, seq=seq, state=state, phase="convert")


async def test_a_created_job_is_committed_queued_with_its_history(tmp_path, build):
    db = tmp_path / "deep" / "h2k.db"
    async with opened(db) as store:
        job, created = await store.create_job(build.job_spec("job-1"), NOW)
        # Read through a separate connection while the store is still open: committed.
        with sqlite3.connect(db) as other:
            row = other.execute("SELECT state FROM jobs WHERE job_id = 'job-1'").fetchone()
            history = other.execute(
                "SELECT from_state, to_state FROM job_transitions WHERE job_id = 'job-1' "
                "ORDER BY id"
            ).fetchall()
    assert created
    assert job.state is JobState.QUEUED
    assert row == ("QUEUED",)
    assert history == [("CREATED", "VALIDATED"), ("VALIDATED", "QUEUED")]
    assert [t.to_state for t in job.history] == [JobState.VALIDATED, JobState.QUEUED]


async def test_the_store_uses_wal_and_survives_a_reopen(tmp_path, build):
    db = tmp_path / "h2k.db"
    async with opened(db) as store:
        await store.create_job(build.job_spec("job-1"), NOW)
    async with opened(db) as store:
        job = await store.get_job("job-1")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert job.spec == build.job_spec("job-1")
    assert job.submitted_at == NOW


async def test_resubmitting_the_same_spec_returns_the_existing_job(tmp_path, build):
    async with opened(tmp_path / "h2k.db") as store:
        first, created = await store.create_job(build.job_spec("job-1"), NOW)
        later_copy = build.job_spec("job-1", created_at="2026-03-02T00:00:00Z")
        again, created_again = await store.create_job(later_copy, NOW + timedelta(hours=1))
        page = await store.list_jobs()
    assert created and not created_again
    assert again.submitted_at == first.submitted_at
    assert [j.job_id for j in page.jobs] == ["job-1"]


async def test_a_different_spec_under_the_same_job_id_is_refused(tmp_path, build):
    async with opened(tmp_path / "h2k.db") as store:
        await store.create_job(build.job_spec("job-1"), NOW)
        with pytest.raises(AlreadyExists) as error:
            await store.create_job(build.job_spec("job-1", execution_policy={"priority": 1}), NOW)
    assert error.value.message == "job_id: job job-1 already exists with a different spec"


async def test_an_illegal_transition_is_refused_and_changes_nothing(tmp_path, build):
    async with opened(tmp_path / "h2k.db") as store:
        await store.create_job(build.job_spec("job-1"), NOW)
        with pytest.raises(IllegalTransition):
            await store.transition("job-1", JobState.COMPLETED, "skipping ahead", last_seq=9)
        job = await store.get_job("job-1")
    assert job.state is JobState.QUEUED
    assert job.last_seq == 0
    assert len(job.history) == 2


async def test_a_job_runs_to_completion_with_one_history_row_per_state_change(tmp_path, build):
    async with opened(tmp_path / "h2k.db") as store:
        await store.create_job(build.job_spec("job-1"), NOW)
        await store.transition(
            "job-1", JobState.ASSIGNED, "assigned", assigned_agent="node-1", attempt=1
        )
        await store.transition("job-1", JobState.RUNNING, "started", started_at=NOW)
        for percent in (10.0, 50.0, 90.0):
            await store.transition(
                "job-1", JobState.PROGRESSING, "convert", progress_percent=percent
            )
        done = await store.transition(
            "job-1", JobState.COMPLETED, "done", result={"outputs": [{"path": "/o/vm.qcow2"}]}
        )
        running = await store.running_jobs_by_agent()
    assert done.state is JobState.COMPLETED
    assert done.result == {"outputs": [{"path": "/o/vm.qcow2"}]}
    assert done.progress_percent == 90.0
    assert done.attempt == 1
    assert [t.to_state for t in done.history][2:] == [
        JobState.ASSIGNED,
        JobState.RUNNING,
        JobState.PROGRESSING,
        JobState.COMPLETED,
    ]
    assert done.to_proto().result.outputs[0].path == "/o/vm.qcow2"
    assert running == {}


async def test_unknown_jobs_are_not_found(tmp_path):
    async with opened(tmp_path / "h2k.db") as store:
        with pytest.raises(NotFound, match="job nope not found"):
            await store.get_job("nope")
        with pytest.raises(NotFound):
            await store.transition("nope", JobState.CANCELLED, "x")


async def test_events_are_stored_once_per_seq(tmp_path, build):
    async with opened(tmp_path / "h2k.db") as store:
        await store.create_job(build.job_spec("job-1"), NOW)
        stored = [await store.append_event(event("job-1", seq)) for seq in (1, 2, 2, 3, 1)]
        after_one = await store.list_events("job-1", after_seq=1)
        first_two = await store.list_events("job-1", limit=2)
    assert stored == [True, True, False, True, False]
    assert [e.seq for e in after_one] == [2, 3]
    assert [e.seq for e in first_two] == [1, 2]
    assert after_one[0].phase == "convert"


async def test_jobs_are_listed_by_state_in_pages(tmp_path, build):
    async with opened(tmp_path / "h2k.db") as store:
        for i in range(5):
            await store.create_job(build.job_spec(f"job-{i}"), NOW + timedelta(seconds=i))
        await store.transition("job-2", JobState.CANCELLED, "not needed")
        first = await store.list_jobs(states=[JobState.QUEUED], limit=2)
        second = await store.list_jobs(states=[JobState.QUEUED], limit=2, offset=2)
        cancelled = await store.list_jobs(states=[JobState.CANCELLED])
    assert [j.job_id for j in first.jobs] == ["job-0", "job-1"]
    assert first.next_offset == 2
    assert [j.job_id for j in second.jobs] == ["job-3", "job-4"]
    assert second.next_offset is None
    assert [j.job_id for j in cancelled.jobs] == ["job-2"]


async def test_reregistering_an_agent_keeps_its_cordon(tmp_path):
    caps = agent_pb2.Capabilities(
        probes=[agent_pb2.CapabilityProbe(name="qemu_img", available=True, version="8.2")],
        memory_total_bytes=8 << 30,
    )
    record = AgentRecord("node-1", "127.0.0.1:1", caps, 2, NOW, NOW, version="0.1.0")
    async with opened(tmp_path / "h2k.db") as store:
        await store.upsert_agent(record)
        await store.set_agent_flags("node-1", cordoned=True)
        again = await store.upsert_agent(record)
        beat = await store.record_heartbeat("node-1", NOW + timedelta(seconds=5), None)
        unknown = await store.record_heartbeat("node-9", NOW, None)
        agent = await store.get_agent("node-1")
    assert again.cordoned
    assert beat and not unknown
    assert agent.last_heartbeat == NOW + timedelta(seconds=5)
    assert agent.available_capabilities() == frozenset({"qemu_img"})
    assert agent.capabilities.memory_total_bytes == 8 << 30
