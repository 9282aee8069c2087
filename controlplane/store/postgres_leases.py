"""Leases of several PostgreSQL replicas: compare-and-set rows judged by the database's
clock, never a replica's (see :mod:`controlplane.ownership`).

A job's stream (which replica follows its agent) and singleton roles (the scheduler) are
each held by one owner until the lease runs out or is released.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from controlplane.store.base import ACTIVE_STATES
from controlplane.store.postgres_pool import Connections
from protocol.states import JobState

_ACTIVE = [s.value for s in ACTIVE_STATES]
_TERMINAL = [s.value for s in JobState if s.is_terminal]


class Leases:
    """The lease methods of :class:`~controlplane.store.postgres.PostgresStore`."""

    def __init__(self, db: Connections) -> None:
        self._db = db

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
