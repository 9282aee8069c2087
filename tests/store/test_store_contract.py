"""The store contract, for SQLite and PostgreSQL alike: durability, idempotent submission,
the state table, event dedup, agents; then what only several replicas need (row locks,
leases in database time, migrations that do not race)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from controlplane.models import AgentRecord
from controlplane.store import JobStore, open_store, postgres_schema, sqlite_schema
from protocol.errors import AlreadyExists, NotFound
from protocol.gen.h2k.v1 import agent_pb2, job_pb2
from protocol.states import IllegalTransition, JobState
from tests.store.conftest import Backend

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def event(job_id: str, seq: int, state: job_pb2.JobState = job_pb2.JOB_STATE_PROGRESSING):
    return job_pb2.ProgressEvent(job_id=job_id, seq=seq, state=state, phase="convert")


def read_other_connection(backend: Backend, sql: str) -> list[tuple]:
    """Rows read through a connection of our own, not the store's."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.url.removeprefix("sqlite://")) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(backend.url) as conn:
        return list(conn.execute(sql.encode()).fetchall())


async def test_a_created_job_is_committed_queued_with_its_history(backend, build):
    async with backend.opened() as store:
        job, created = await store.create_job(build.job_spec("job-1"), NOW)
        # Read through a separate connection while the store is still open: committed.
        row = read_other_connection(backend, "SELECT state FROM jobs WHERE job_id = 'job-1'")
        history = read_other_connection(
            backend,
            "SELECT from_state, to_state FROM job_transitions WHERE job_id = 'job-1' ORDER BY id",
        )
    assert created
    assert job.state is JobState.QUEUED
    assert row == [("QUEUED",)]
    assert history == [("CREATED", "VALIDATED"), ("VALIDATED", "QUEUED")]
    assert [t.to_state for t in job.history] == [JobState.VALIDATED, JobState.QUEUED]


async def test_a_submit_answers_what_reading_the_job_back_gives(backend, build):
    # The answer is built from what was inserted, not read back: it must be the same record,
    # field for field, its spec's protobuf included.
    spec = build.job_spec("job-1", audit={"requested_by": "ana", "tags": {"team": "a"}})
    async with backend.opened() as store:
        job, _ = await store.create_job(spec, NOW, "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
        batch = await store.create_jobs([build.job_spec("job-2"), build.job_spec("job-3")], NOW)
        stored = [await store.get_job(j) for j in ("job-1", "job-2", "job-3")]
    assert [job, *(j for j, _ in batch)] == stored
    assert [j.to_proto() for j, _ in [(job, True), *batch]] == [j.to_proto() for j in stored]


async def test_the_store_survives_a_reopen_at_its_schema_version(backend, build):
    async with backend.opened() as store:
        await store.create_job(build.job_spec("job-1"), NOW)
    async with backend.opened() as store:
        job = await store.get_job("job-1")
    if backend.name == "sqlite":
        assert read_other_connection(backend, "PRAGMA journal_mode") == [("wal",)]
        version = read_other_connection(backend, "PRAGMA user_version")
        assert version == [(sqlite_schema.SCHEMA_VERSION,)]
    else:
        versions = read_other_connection(
            backend, "SELECT version FROM schema_migrations ORDER BY version"
        )
        assert versions == [(v,) for v in range(1, postgres_schema.SCHEMA_VERSION + 1)]
    assert job.spec == build.job_spec("job-1")
    assert job.submitted_at == NOW


async def test_resubmitting_the_same_spec_returns_the_existing_job(backend, build):
    async with backend.opened() as store:
        first, created = await store.create_job(build.job_spec("job-1"), NOW)
        later_copy = build.job_spec("job-1", created_at="2026-03-02T00:00:00Z")
        again, created_again = await store.create_job(later_copy, NOW + timedelta(hours=1))
        page = await store.list_jobs()
    assert created and not created_again
    assert again.submitted_at == first.submitted_at
    assert [j.job_id for j in page.jobs] == ["job-1"]


async def test_a_different_spec_under_the_same_job_id_is_refused(backend, build):
    async with backend.opened() as store:
        await store.create_job(build.job_spec("job-1"), NOW)
        with pytest.raises(AlreadyExists) as error:
            await store.create_job(build.job_spec("job-1", execution_policy={"priority": 1}), NOW)
    assert error.value.message == "job_id: job job-1 already exists with a different spec"


async def test_an_illegal_transition_is_refused_and_changes_nothing(backend, build):
    async with backend.opened() as store:
        await store.create_job(build.job_spec("job-1"), NOW)
        with pytest.raises(IllegalTransition):
            await store.transition("job-1", JobState.COMPLETED, "skipping ahead", last_seq=9)
        job = await store.get_job("job-1")
    assert job.state is JobState.QUEUED
    assert job.last_seq == 0
    assert len(job.history) == 2


async def test_a_job_runs_to_completion_with_one_history_row_per_state_change(backend, build):
    async with backend.opened() as store:
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


async def test_unknown_jobs_are_not_found(backend):
    async with backend.opened() as store:
        with pytest.raises(NotFound, match="job nope not found"):
            await store.get_job("nope")
        with pytest.raises(NotFound):
            await store.transition("nope", JobState.CANCELLED, "x")


async def test_events_are_stored_once_per_seq(backend, build):
    async with backend.opened() as store:
        await store.create_job(build.job_spec("job-1"), NOW)
        stored = [await store.append_event(event("job-1", seq)) for seq in (1, 2, 2, 3, 1)]
        after_one = await store.list_events("job-1", after_seq=1)
        first_two = await store.list_events("job-1", limit=2)
    assert stored == [True, True, False, True, False]
    assert [e.seq for e in after_one] == [2, 3]
    assert [e.seq for e in first_two] == [1, 2]
    assert after_one[0].phase == "convert"


async def test_a_watcher_reads_the_state_with_the_events_after_its_seq(backend, build):
    async with backend.opened() as store:
        await store.create_job(build.job_spec("job-1"), NOW)
        queued = await store.events_with_state("job-1", 0)
        for seq in (1, 2, 3):
            await store.append_event(event("job-1", seq))
        await store.transition("job-1", JobState.CANCELLED, "not needed")
        ended, after_one = await store.events_with_state("job-1", 1)
        _, one = await store.events_with_state("job-1", 1, limit=1)
        _, none_after = await store.events_with_state("job-1", 3)
        with pytest.raises(NotFound, match="job nope not found"):
            await store.events_with_state("nope", 0)
    assert queued == (JobState.QUEUED, [])
    assert ended is JobState.CANCELLED
    assert [e.seq for e in after_one] == [2, 3]
    assert after_one[0].phase == "convert"
    assert [e.seq for e in one] == [2]
    assert none_after == []


async def test_jobs_are_listed_by_state_in_pages(backend, build):
    async with backend.opened() as store:
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


async def test_reregistering_an_agent_keeps_its_cordon(backend):
    caps = agent_pb2.Capabilities(
        probes=[agent_pb2.CapabilityProbe(name="qemu_img", available=True, version="8.2")],
        memory_total_bytes=8 << 30,
    )
    record = AgentRecord("node-1", "127.0.0.1:1", caps, 2, NOW, NOW, version="0.1.0")
    async with backend.opened() as store:
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


async def test_a_heartbeat_is_committed_when_answered_even_beside_a_failing_write(backend, build):
    caps = agent_pb2.Capabilities(memory_total_bytes=8 << 30)
    record = AgentRecord("node-1", "127.0.0.1:1", caps, 2, NOW, NOW, version="0.1.0")
    async with backend.opened() as store:
        await store.upsert_agent(record)
        await store.create_job(build.job_spec("job-1"), NOW)
        later = NOW + timedelta(seconds=7)
        # Sent together, so on SQLite they share one group commit; the illegal move fails
        # alone and the heartbeat is still stored.
        beat, refused = await asyncio.gather(
            store.record_heartbeat("node-1", later, None),
            store.transition("job-1", JobState.COMPLETED, "not legal from QUEUED"),
            return_exceptions=True,
        )
        stored = read_other_connection(
            backend, "SELECT last_heartbeat FROM agents WHERE name = 'node-1'"
        )
    assert beat is True
    assert isinstance(refused, IllegalTransition)
    [(value,)] = stored  # SQLite keeps ISO text, PostgreSQL a timestamptz
    assert (value if isinstance(value, datetime) else datetime.fromisoformat(value)) == later


# --- several replicas on one database -------------------------------------------------

LEASE = timedelta(seconds=30)


async def _queued(store: JobStore, build, count: int) -> list[str]:
    ids = [f"job-{i:03d}" for i in range(count)]
    for i, job_id in enumerate(ids):
        await store.create_job(build.job_spec(job_id), NOW + timedelta(seconds=i))
    return ids


async def _assign_all(store: JobStore, ids: list[str], agent: str) -> list[str]:
    """What one replica's scheduler does: try to assign every job; returns those it got."""
    won = []
    for job_id in ids:
        try:
            await store.transition(
                job_id, JobState.ASSIGNED, f"to {agent}", assigned_agent=agent, attempt=1
            )
        except IllegalTransition:
            continue
        won.append(job_id)
    return won


async def test_replicas_assigning_the_same_jobs_at_once_assign_each_exactly_once(backend, build):
    async with backend.opened() as first:
        ids = await _queued(first, build, 40)
    replicas = 1 if backend.name == "sqlite" else 4  # SQLite serves one control plane
    stores = [await open_store(backend.url) for _ in range(replicas)]
    try:
        results = await asyncio.gather(
            *(_assign_all(s, ids, f"node-{n}") for n, s in enumerate(stores))
        )
        jobs = [await stores[0].get_job(job_id) for job_id in ids]
    finally:
        for store in stores:
            await store.close()
    winners = [job_id for won in results for job_id in won]
    assert sorted(winners) == ids  # every job assigned once, by exactly one replica
    for job in jobs:
        assert [t.to_state for t in job.history].count(JobState.ASSIGNED) == 1
        owner = next(n for n, won in enumerate(results) if job.job_id in won)
        assert job.assigned_agent == f"node-{owner}"


async def test_a_stream_lease_has_one_owner_until_it_runs_out(backend, build):
    async with backend.opened() as store:
        (job_id,) = await _queued(store, build, 1)
        assert await store.claim_stream(job_id, "replica-a", LEASE)
        await store.transition(job_id, JobState.ASSIGNED, "x", assigned_agent="n", attempt=1)
        taken = await store.claim_stream(job_id, "replica-b", LEASE)
        renewed = await store.renew_streams("replica-a", LEASE)
        unowned_while_held = await store.unowned_active_jobs()
        # A lease that ran out (database time) is free for another replica.
        assert await store.claim_stream(job_id, "replica-a", timedelta(seconds=-1))
        unowned_after = await store.unowned_active_jobs()
        taken_after = await store.claim_stream(job_id, "replica-b", LEASE)
        still_a = await store.renew_streams("replica-a", LEASE)
    if backend.name == "sqlite":
        # One control plane: every lease is trivially its own.
        assert taken and taken_after
        return
    assert not taken
    assert renewed == [job_id]
    assert unowned_while_held == []
    assert unowned_after == [job_id]
    assert taken_after
    assert still_a == []


async def test_a_requeued_jobs_old_lease_does_not_block_its_next_owner(backend, build):
    async with backend.opened() as store:
        (job_id,) = await _queued(store, build, 1)
        assert await store.claim_stream(job_id, "replica-a", LEASE)
        # replica-a holds a fresh lease, but the job is QUEUED (not active): free to take.
        assert await store.claim_stream(job_id, "replica-b", LEASE)
        assert await store.renew_streams("replica-b", LEASE) == (
            [job_id] if backend.name == "postgresql" else []
        )


async def test_the_scheduler_role_has_one_holder_and_is_released_on_stop(backend):
    async with backend.opened() as store:
        a = await store.claim_role("scheduler", "replica-a", LEASE)
        b = await store.claim_role("scheduler", "replica-b", LEASE)
        a_again = await store.claim_role("scheduler", "replica-a", LEASE)
        await store.release_streams("replica-a")
        b_after_release = await store.claim_role("scheduler", "replica-b", LEASE)
    assert a and a_again and b_after_release
    assert b is (backend.name == "sqlite")


async def test_replicas_starting_together_migrate_a_new_database_once(backend):
    if backend.name == "sqlite":
        pytest.skip("one control plane per SQLite file")
    stores = await asyncio.gather(*(open_store(backend.url) for _ in range(5)))
    for store in stores:
        await store.close()
    versions = read_other_connection(backend, "SELECT version FROM schema_migrations")
    assert sorted(versions) == [(v,) for v in range(1, postgres_schema.SCHEMA_VERSION + 1)]
