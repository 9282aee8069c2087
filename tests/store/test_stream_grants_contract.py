"""The store contract of spreading streams over replicas, for SQLite and PostgreSQL: the
scheduler grants each job's stream to a chosen replica, replicas say they are alive, the
grantee confirms its ASSIGNED grants and is told of them through the grants feed.

SQLite serves one control plane: every grant is its own and there is nobody to tell.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from controlplane.ownership import StreamOwnership
from controlplane.store import JobStore
from devsupport.cluster import wait_for
from protocol.states import JobState

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
LEASE = timedelta(seconds=30)
RUN_OUT = timedelta(seconds=-1)


async def _queued(store: JobStore, build, count: int) -> list[str]:
    ids = [f"job-{i:03d}" for i in range(count)]
    for i, job_id in enumerate(ids):
        await store.create_job(build.job_spec(job_id), NOW + timedelta(seconds=i))
    return ids


async def _assign(store: JobStore, job_id: str) -> None:
    await store.transition(job_id, JobState.ASSIGNED, "x", assigned_agent="n", attempt=1)


async def test_each_job_is_granted_to_its_own_owner_unless_another_holds_it(backend, build):
    async with backend.opened() as store:
        a, b, held = await _queued(store, build, 3)
        assert await store.claim_stream(held, "replica-c", LEASE)
        await _assign(store, held)  # active, with replica-c's lease: not free
        granted = await store.grant_streams(
            {a: "replica-a", b: "replica-b", held: "replica-b"}, LEASE
        )
        of_a = await store.renew_streams("replica-a", LEASE)
        of_b = await store.renew_streams("replica-b", LEASE)
        of_c = await store.renew_streams("replica-c", LEASE)
    if backend.name == "sqlite":
        assert granted == [a, b, held]
        return
    assert granted == [a, b]
    assert (of_a, of_b, of_c) == ([a], [b], [held])


async def test_a_replica_confirms_only_its_unexpired_grants_of_assigned_jobs(backend, build):
    async with backend.opened() as store:
        assigned, running, queued, lapsed, others = await _queued(store, build, 5)
        await store.grant_streams(
            {assigned: "replica-a", running: "replica-a", queued: "replica-a", others: "b"}, LEASE
        )
        await store.grant_streams({lapsed: "replica-a"}, RUN_OUT)
        for job_id in (assigned, running, lapsed, others):
            await _assign(store, job_id)
        await store.transition(running, JobState.RUNNING, "started")
        confirmed = await store.renew_assigned_streams("replica-a", LEASE)
        # Confirming extends the lease: nobody else may take the job now.
        taken = await store.claim_stream(assigned, "replica-b", LEASE)
    if backend.name == "sqlite":
        assert confirmed == []
        return
    assert confirmed == [assigned]
    assert not taken


async def test_stream_loads_count_active_streams_of_live_replicas_only(backend, build):
    async with backend.opened() as store:
        a1, a2, b1, done = await _queued(store, build, 4)
        await store.announce_replica("replica-a", LEASE)
        await store.announce_replica("replica-b", LEASE)
        await store.announce_replica("replica-gone", RUN_OUT)
        await store.announce_replica("replica-idle", LEASE)
        await store.grant_streams(
            {a1: "replica-a", a2: "replica-a", b1: "replica-b", done: "replica-b"}, LEASE
        )
        for job_id in (a1, a2, b1, done):
            await _assign(store, job_id)
        await store.transition(done, JobState.CANCELLED, "cancelled")
        loads = await store.stream_loads()
        await store.release_streams("replica-a")  # a graceful stop: no longer live
        after_release = await store.stream_loads()
    if backend.name == "sqlite":
        assert loads == after_release == {}
        return
    assert loads == {"replica-a": 2, "replica-b": 1, "replica-idle": 0}
    assert after_release == {"replica-b": 1, "replica-idle": 0}


async def test_a_replica_hears_the_other_replicas_dispatch_notices_in_order(backend, build):
    heard: list[str | None] = []
    async with backend.opened() as scheduler, backend.opened() as replica_b:
        replica_b.start_dispatch_feed(heard.append)
        if backend.name == "sqlite":
            await scheduler.notify_dispatchers(["replica-b"])
            await asyncio.sleep(0)  # let anything scheduled run: nothing may be
            assert heard == []
            return
        # The feed reports None once it listens (notices may have been missed before).
        await asyncio.to_thread(wait_for, lambda: heard, what="dispatch feed connected")
        await scheduler.notify_dispatchers(["replica-c"])
        await replica_b.notify_dispatchers(["scheduler"])  # its own: not reported back
        await scheduler.notify_dispatchers(["replica-b", "scheduler"])
        await asyncio.to_thread(wait_for, lambda: len(heard) >= 4, what="notices heard")
        # In commit order, every other replica's notice, each name once.
        assert heard == [None, "replica-c", "replica-b", "scheduler"]


async def test_new_streams_spread_over_live_replicas_and_start_only_where_granted(backend, build):
    async with backend.opened() as store:
        a = StreamOwnership(store, LEASE, owner="replica-a")
        b = StreamOwnership(store, LEASE, owner="replica-b")
        await b.announce()
        await a.announce()  # the scheduler's tick: reads who is alive, with their streams
        ids = await _queued(store, build, 4)
        owners = await a.choose_owners(ids)
        granted = await a.grant_many(owners)
        for job_id in granted:
            await _assign(store, job_id)
        confirmed = await b.confirm_granted()
        of_a = [j for j in ids if owners[j] == "replica-a"]
        a_may = [j for j in ids if a.may_start(j, 1)]
        b_may = [j for j in ids if b.may_start(j, 1)]
        for job_id in of_a:
            a.starting(job_id, 1)  # started: never again
        a_again = [j for j in ids if a.may_start(j, 1)]
    assert granted == ids
    if backend.name == "sqlite":
        assert set(owners.values()) == {"replica-a"}
        assert confirmed == []
        return
    of_b = [j for j in ids if owners[j] == "replica-b"]
    assert len(of_a) == len(of_b) == 2
    assert confirmed == of_b
    assert (a_may, b_may, a_again) == (of_a, of_b, [])
