"""The queue as the scheduler reads it, for SQLite and PostgreSQL alike: kinds of needs,
scheduling order, bulk queue reasons, and kinds filled in for jobs stored before they existed."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg

from controlplane.capabilities import needs_kind
from protocol.states import JobState
from tests.store.conftest import Backend

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
NBD = {"capability_requirements": {"needs_nbd": True}}


def execute(backend: Backend, sql: str) -> None:
    """Run a statement through a connection of our own, not the store's."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.url.removeprefix("sqlite://")) as conn:
            conn.execute(sql)
        return
    with psycopg.connect(backend.url) as conn:
        conn.execute(sql.encode())


async def submit(store, build, job_id: str, seconds: int, priority: int = 5, **sections):
    spec = build.job_spec(job_id, execution_policy={"priority": priority}, **sections)
    await store.create_job(spec, NOW + timedelta(seconds=seconds))
    return spec


async def test_the_queue_is_summarised_by_kind(backend, build):
    async with backend.opened() as store:
        plain = await submit(store, build, "a", 2)
        await submit(store, build, "b", 1)
        nbd = await submit(store, build, "c", 3, **NBD)
        await submit(store, build, "d", 0)
        await store.transition("d", JobState.CANCELLED, "not needed")
        summary = {k.kind: k for k in await store.queue_summary()}
    assert needs_kind(plain) != needs_kind(nbd)
    assert set(summary) == {needs_kind(plain), needs_kind(nbd)}
    assert summary[needs_kind(plain)].count == 2
    assert summary[needs_kind(plain)].oldest_submitted_at == NOW + timedelta(seconds=1)
    assert summary[needs_kind(nbd)].count == 1


async def test_queued_jobs_are_read_in_scheduling_order_by_kind(backend, build):
    async with backend.opened() as store:
        plain = await submit(store, build, "late-urgent", 9, priority=1)
        await submit(store, build, "early", 1)
        await submit(store, build, "later", 5)
        await submit(store, build, "nbd", 0, **NBD)
        await submit(store, build, "gone", 2)
        await store.transition("gone", JobState.CANCELLED, "not needed")
        kind = needs_kind(plain)
        two = await store.list_queued([kind], limit=2)
        rest = await store.list_queued([kind], limit=10, exclude=[j.job_id for j in two])
        none = await store.list_queued([], limit=10)
    assert [j.job_id for j in two] == ["late-urgent", "early"]
    assert [j.job_id for j in rest] == ["later"]
    assert two[0].priority == 1 and two[0].kind == kind and two[0].attempt == 0
    assert two[1].submitted_at == NOW + timedelta(seconds=1)
    assert none == []


async def test_queue_reasons_are_set_per_kind_sparing_the_kept_jobs(backend, build):
    async with backend.opened() as store:
        plain = await submit(store, build, "a", 0)
        await submit(store, build, "b", 1)
        await submit(store, build, "kept", 2)
        nbd = await submit(store, build, "n", 3, **NBD)
        await submit(store, build, "done", 4)
        await store.transition("done", JobState.CANCELLED, "not needed")
        reasons = {needs_kind(plain): "all agents are busy", needs_kind(nbd): "no agent has nbd"}
        changed = await store.set_queue_reasons(reasons, keep=["kept"])
        again = await store.set_queue_reasons(reasons, keep=["kept"])
        jobs = {j: await store.get_job(j) for j in ("a", "b", "kept", "n", "done")}
    assert changed == 3
    assert again == 0  # nothing to change: no write per job
    assert jobs["a"].queue_reason == jobs["b"].queue_reason == "all agents are busy"
    assert jobs["n"].queue_reason == "no agent has nbd"
    assert jobs["kept"].queue_reason == ""
    assert jobs["done"].queue_reason == ""


async def test_jobs_stored_without_a_kind_get_theirs_when_the_store_opens(backend, build):
    async with backend.opened() as store:
        nbd = await submit(store, build, "n", 0, **NBD)
        await submit(store, build, "done", 1)
        await store.transition("done", JobState.CANCELLED, "not needed")
    # As a store of schema version 2 left them: the column filled with its default.
    execute(backend, "UPDATE jobs SET needs_kind = ''")
    async with backend.opened() as store:
        summary = await store.queue_summary()
        queued = await store.list_queued([needs_kind(nbd)], limit=5)
    assert [(k.kind, k.count) for k in summary] == [(needs_kind(nbd), 1)]
    assert [j.job_id for j in queued] == ["n"]
