"""The PostgreSQL schema of the job store: numbered migrations, applied once, in order.

Several control-plane replicas may start at the same moment against an empty database. Each
applies the migrations inside one transaction that first takes a transaction-scoped advisory
lock, so exactly one of them creates the schema and the others, once the lock is theirs, find
every version recorded in ``schema_migrations`` and do nothing.
"""

from __future__ import annotations

import logging

import psycopg

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: any fixed bigint unique to h2k's migrations ("h2k-migr").
MIGRATION_LOCK_KEY = 0x68326B2D6D696772

_V1 = """
CREATE TABLE jobs (
    job_id           TEXT PRIMARY KEY,
    spec             TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    assigned_agent   TEXT,
    queue_reason     TEXT NOT NULL DEFAULT '',
    result           TEXT,
    error            TEXT,
    submitted_at     TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    phase            TEXT NOT NULL DEFAULT '',
    progress_percent DOUBLE PRECISION NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    trace_context    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX jobs_by_state ON jobs (state, submitted_at);
CREATE INDEX jobs_by_submission ON jobs (submitted_at, job_id);

CREATE TABLE job_transitions (
    id         BIGSERIAL PRIMARY KEY,
    job_id     TEXT NOT NULL REFERENCES jobs (job_id),
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    time       TIMESTAMPTZ NOT NULL,
    reason     TEXT NOT NULL,
    attempt    INTEGER NOT NULL
);
CREATE INDEX job_transitions_by_job ON job_transitions (job_id, id);

CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs (job_id),
    seq    INTEGER NOT NULL,
    event  TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE agents (
    name                TEXT PRIMARY KEY,
    address             TEXT NOT NULL,
    capabilities        TEXT NOT NULL,
    max_concurrent_jobs INTEGER NOT NULL,
    cordoned            BOOLEAN NOT NULL DEFAULT FALSE,
    draining            BOOLEAN NOT NULL DEFAULT FALSE,
    drain_deadline      TIMESTAMPTZ,
    registered_at       TIMESTAMPTZ NOT NULL,
    last_heartbeat      TIMESTAMPTZ NOT NULL,
    version             TEXT NOT NULL DEFAULT ''
);
"""

# Version 2: leases of several replicas, in database time (see controlplane/ownership.py).
# job_streams: which replica follows a job's ExecuteJob/AttachJob stream.
# roles: singleton duties such as the scheduler.
_V2 = """
CREATE TABLE job_streams (
    job_id     TEXT PRIMARY KEY REFERENCES jobs (job_id),
    owner      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX job_streams_by_owner ON job_streams (owner);

CREATE TABLE roles (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"""

# The job's kind of needs (controlplane.capabilities.needs_kind) and the queue in scheduling
# order, so a scheduling pass reads only jobs some agent can take now. Jobs stored before
# have an empty kind; the store fills it in when it opens.
_V3 = """
ALTER TABLE jobs ADD COLUMN needs_kind TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_queue ON jobs (state, priority, submitted_at, job_id);
CREATE INDEX jobs_by_kind ON jobs (state, needs_kind, queue_reason, submitted_at);
"""

MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3}
SCHEMA_VERSION = max(MIGRATIONS)


async def migrate(conn: psycopg.AsyncConnection[object]) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns how many migrations this call ran.

    Raises:
        RuntimeError: the database was migrated by a newer control plane.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        row = await cursor.fetchone()
        current = int(row[0]) if row else 0  # type: ignore[index]
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this control plane "
                f"understands ({SCHEMA_VERSION})"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[version].encode())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            log.info("schema migrated version=%d", version)
    return SCHEMA_VERSION - current
