"""Leases of several PostgreSQL replicas: compare-and-set rows judged by the database's
clock, never a replica's (see :mod:`controlplane.ownership`).

A job's stream (which replica follows its agent) and singleton roles (the scheduler) are
each held by one owner until the lease runs out or is released. Each live replica also holds
a role of its own (``replica:<owner>``): the scheduler spreads new streams over the replicas
that hold theirs, least loaded first, and tells each of them on :data:`DISPATCH_CHANNEL`
(where a relaying replica also tells the scheduler that slots were freed).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta

from controlplane.store.base import ACTIVE_STATES
from controlplane.store.postgres_pool import Connections
from protocol.states import JobState

_ACTIVE = [s.value for s in ACTIVE_STATES]
_TERMINAL = [s.value for s in JobState if s.is_terminal]
# Role rows that say a replica is alive (renewed every dispatcher tick).
REPLICA_ROLE_PREFIX = "replica:"
# NOTIFY channel: "<instance>:<name>" = the dispatcher called ``name`` (a replica's owner
# name, or a role: whoever holds it) has something to do.
DISPATCH_CHANNEL = "h2k_dispatch"

# Free to take: no lease yet, the owner's already, run out, or the job is not active (a
# requeued job's old lease must not keep the scheduler from assigning it again).
_UPSERT_FREE_LEASE = (
    "ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner, "
    "expires_at = excluded.expires_at "
    "WHERE s.owner = excluded.owner OR s.expires_at < clock_timestamp() "
    "OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = s.job_id "
    "AND j.state = ANY(%s)) RETURNING s.job_id"
)


class Leases:
    """The lease methods of :class:`~controlplane.store.postgres.PostgresStore`."""

    def __init__(self, db: Connections, instance_id: str) -> None:
        self._db = db
        self._instance_id = instance_id

    async def claim_stream(self, job_id: str, owner: str, lease: timedelta) -> bool:
        # Free to take: no lease yet, ours already, run out, or the job is not active (a
        # requeued job's old lease must not keep the scheduler from assigning it again).
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO job_streams AS s (job_id, owner, expires_at) "
                "VALUES (%s, %s, clock_timestamp() + %s) "
                "ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE s.owner = excluded.owner OR s.expires_at < clock_timestamp() "
                "OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = s.job_id "
                "AND j.state = ANY(%s)) RETURNING s.job_id",
                (job_id, owner, lease, _ACTIVE),
            )
            return await cursor.fetchone() is not None

    async def claim_streams(
        self, job_ids: Sequence[str], owner: str, lease: timedelta
    ) -> list[str]:
        if not job_ids:
            return []
        # As claim_stream, for a scheduling pass's jobs at once (in job_id order: two
        # replicas claiming overlapping sets never wait on each other in a circle).
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO job_streams AS s (job_id, owner, expires_at) "
                "SELECT j, %s, clock_timestamp() + %s FROM unnest(%s::text[]) AS j ORDER BY j "
                "ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE s.owner = excluded.owner OR s.expires_at < clock_timestamp() "
                "OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = s.job_id "
                "AND j.state = ANY(%s)) RETURNING s.job_id",
                (owner, lease, sorted(set(job_ids)), _ACTIVE),
            )
            claimed = {row["job_id"] for row in await cursor.fetchall()}
        return [j for j in job_ids if j in claimed]

    async def renew_streams(self, owner: str, lease: timedelta) -> list[str]:
        async with self._db.transaction() as conn:
            # Leases of finished jobs are dropped by whoever renews first.
            await conn.execute(
                "DELETE FROM job_streams s USING jobs j "
                "WHERE s.job_id = j.job_id AND j.state = ANY(%s)",
                (_TERMINAL,),
            )
            cursor = await conn.execute(
                "UPDATE job_streams SET expires_at = clock_timestamp() + %s "
                "WHERE owner = %s RETURNING job_id",
                (lease, owner),
            )
            return [row["job_id"] for row in await cursor.fetchall()]

    async def unowned_active_jobs(self) -> list[str]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT j.job_id FROM jobs j LEFT JOIN job_streams s ON s.job_id = j.job_id "
                "WHERE j.state = ANY(%s) "
                "AND (s.job_id IS NULL OR s.expires_at < clock_timestamp()) "
                "ORDER BY j.submitted_at, j.job_id",
                (_ACTIVE,),
            )
            return [row["job_id"] for row in await cursor.fetchall()]

    async def release_streams(self, owner: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM job_streams WHERE owner = %s", (owner,))
            await conn.execute("DELETE FROM roles WHERE owner = %s", (owner,))

    async def claim_role(self, role: str, owner: str, lease: timedelta) -> bool:
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO roles AS r (name, owner, expires_at) "
                "VALUES (%s, %s, clock_timestamp() + %s) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE r.owner = excluded.owner OR r.expires_at < clock_timestamp() "
                "RETURNING r.name",
                (role, owner, lease),
            )
            return await cursor.fetchone() is not None

    async def grant_streams(self, grants: Mapping[str, str], lease: timedelta) -> list[str]:
        if not grants:
            return []
        # As claim_streams, each job for its own owner (in job_id order, as there).
        ordered = sorted(grants)
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO job_streams AS s (job_id, owner, expires_at) "
                "SELECT v.job_id, v.owner, clock_timestamp() + %s "
                "FROM unnest(%s::text[], %s::text[]) AS v(job_id, owner) ORDER BY v.job_id "
                + _UPSERT_FREE_LEASE,
                (lease, ordered, [grants[j] for j in ordered], _ACTIVE),
            )
            granted = {row["job_id"] for row in await cursor.fetchall()}
        return [j for j in grants if j in granted]

    async def notify_dispatchers(self, names: Collection[str]) -> None:
        if not names:
            return
        async with self._db.transaction() as conn:
            await conn.execute(
                "SELECT pg_notify(%s, %s || n) FROM unnest(%s::text[]) AS t(n)",
                (DISPATCH_CHANNEL, f"{self._instance_id}:", sorted(set(names))),
            )

    async def renew_assigned_streams(self, owner: str, lease: timedelta) -> list[str]:
        async with self._db.transaction() as conn:
            # Only leases still ours: one that ran out may have been taken over meanwhile.
            cursor = await conn.execute(
                "UPDATE job_streams s SET expires_at = clock_timestamp() + %s FROM jobs j "
                "WHERE s.job_id = j.job_id AND s.owner = %s AND j.state = %s "
                "AND s.expires_at >= clock_timestamp() RETURNING s.job_id",
                (lease, owner, JobState.ASSIGNED.value),
            )
            return sorted(row["job_id"] for row in await cursor.fetchall())

    async def announce_replica(self, owner: str, lease: timedelta) -> None:
        await self.claim_role(REPLICA_ROLE_PREFIX + owner, owner, lease)

    async def stream_loads(self) -> dict[str, int]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT r.owner, count(j.job_id) AS streams FROM roles r "
                "LEFT JOIN job_streams s ON s.owner = r.owner "
                "AND s.expires_at >= clock_timestamp() "
                "LEFT JOIN jobs j ON j.job_id = s.job_id AND j.state = ANY(%s) "
                "WHERE r.name LIKE %s AND r.expires_at >= clock_timestamp() "
                "GROUP BY r.owner",
                (_ACTIVE, REPLICA_ROLE_PREFIX + "%"),
            )
            return {row["owner"]: int(row["streams"]) for row in await cursor.fetchall()}
