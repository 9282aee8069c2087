"""The PostgreSQL schema of the job store: the shared history, one row per step applied.

Several control-plane replicas may start at the same moment against an empty database. Each
applies the steps inside one transaction that first takes a transaction-scoped advisory
lock, so exactly one of them creates the schema and the others, once the lock is theirs, find
every version recorded in ``schema_migrations`` and do nothing.

Control planes before the shared history numbered PostgreSQL's steps their own way (see
:data:`_LEGACY_STEPS`). Their ``schema_migrations`` has no ``shared_history`` column: such a
table is renumbered once, in the same locked transaction, and the missing steps follow.
"""

from __future__ import annotations

import logging
from datetime import datetime

import psycopg

from controlplane.store.schema import POSTGRES, SCHEMA_VERSION, step_sql

__all__ = ["MIGRATION_LOCK_KEY", "SCHEMA_VERSION", "migrate"]

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: any fixed bigint unique to h2k's migrations ("h2k-migr").
MIGRATION_LOCK_KEY = 0x68326B2D6D696772

# The old PostgreSQL numbering as shared steps: its version 1 created the jobs table with
# trace_context already (shared 1 and 2), its 2 the leases (shared 4), its 3 the kinds (3).
_LEGACY_STEPS: dict[int, tuple[int, ...]] = {1: (1, 2), 2: (4,), 3: (3,)}

Conn = psycopg.AsyncConnection[object]


async def migrate(conn: Conn) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns how many steps this call ran.

    Raises:
        RuntimeError: the database was migrated by a newer control plane.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
            " shared_history BOOLEAN NOT NULL DEFAULT TRUE)"
        )
        if not await _numbered_by_shared_history(conn):
            await _renumber_legacy(conn)
        cursor = await conn.execute("SELECT version FROM schema_migrations")
        applied = {int(row[0]) for row in await cursor.fetchall()}  # type: ignore[index]
        current = max(applied, default=0)
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this control plane "
                f"understands ({SCHEMA_VERSION})"
            )
        missing = [v for v in range(1, SCHEMA_VERSION + 1) if v not in applied]
        for version in missing:
            await conn.execute(step_sql(version, POSTGRES).encode())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            log.info("schema migrated version=%d", version)
    return len(missing)


async def _numbered_by_shared_history(conn: Conn) -> bool:
    cursor = await conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'schema_migrations' AND column_name = 'shared_history'"
    )
    return await cursor.fetchone() is not None


async def _renumber_legacy(conn: Conn) -> None:
    """Record a database of the old PostgreSQL numbering by the shared steps it has."""
    cursor = await conn.execute("SELECT version, applied_at FROM schema_migrations")
    legacy: list[tuple[int, datetime]] = [
        (int(row[0]), row[1])  # type: ignore[index]
        for row in await cursor.fetchall()
    ]
    unknown = sorted(v for v, _ in legacy if v not in _LEGACY_STEPS)
    if unknown:
        raise RuntimeError(
            f"database schema versions {unknown} are newer than this control plane understands"
        )
    await conn.execute("DELETE FROM schema_migrations")
    await conn.execute(
        "ALTER TABLE schema_migrations ADD COLUMN shared_history BOOLEAN NOT NULL DEFAULT TRUE"
    )
    for version, applied_at in legacy:
        for step in _LEGACY_STEPS[version]:
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                (step, applied_at),
            )
    log.info(
        "schema renumbered to the shared history legacy=%s",
        ",".join(str(v) for v, _ in sorted(legacy)),
    )
