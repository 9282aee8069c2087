"""The SQLite schema of the job store, versioned with ``PRAGMA user_version``."""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 3

_SCHEMA_V1 = """
CREATE TABLE jobs (
    job_id           TEXT PRIMARY KEY,
    spec             TEXT NOT NULL,      -- the validated v1 spec as JSON
    fingerprint      TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    assigned_agent   TEXT,
    queue_reason     TEXT NOT NULL DEFAULT '',
    result           TEXT,               -- JobResult as JSON
    error            TEXT,
    submitted_at     TEXT NOT NULL,      -- ISO 8601, UTC, microseconds
    updated_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    phase            TEXT NOT NULL DEFAULT '',
    progress_percent REAL NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_state ON jobs (state, submitted_at);
CREATE INDEX jobs_by_submission ON jobs (submitted_at, job_id);

CREATE TABLE job_transitions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL REFERENCES jobs (job_id),
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    time       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    attempt    INTEGER NOT NULL
);
CREATE INDEX job_transitions_by_job ON job_transitions (job_id, id);

CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs (job_id),
    seq    INTEGER NOT NULL,
    event  TEXT NOT NULL,                -- ProgressEvent as JSON
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE agents (
    name                TEXT PRIMARY KEY,
    address             TEXT NOT NULL,
    capabilities        TEXT NOT NULL,   -- Capabilities as JSON
    max_concurrent_jobs INTEGER NOT NULL,
    cordoned            INTEGER NOT NULL DEFAULT 0,
    draining            INTEGER NOT NULL DEFAULT 0,
    drain_deadline      TEXT,
    registered_at       TEXT NOT NULL,
    last_heartbeat      TEXT NOT NULL,
    version             TEXT NOT NULL DEFAULT ''
);
"""

# Version 2: the W3C traceparent of the submit, so a job's dispatch joins its trace.
_SCHEMA_V2 = """
ALTER TABLE jobs ADD COLUMN trace_context TEXT NOT NULL DEFAULT ''
"""

# Version 3: the job's kind of needs (controlplane.capabilities.needs_kind) and the queue in
# scheduling order, so a scheduling pass reads only jobs some agent can take now. Jobs stored
# before have an empty kind; the store fills it in when it opens.
_SCHEMA_V3 = """
ALTER TABLE jobs ADD COLUMN needs_kind TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_queue ON jobs (state, priority, submitted_at, job_id);
CREATE INDEX jobs_by_kind ON jobs (state, needs_kind, queue_reason, submitted_at)
"""

_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3}


def migrate(conn: sqlite3.Connection) -> None:
    """Create or upgrade the schema step by step; refuse one written by a newer control plane."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {version} is newer than this control plane "
            f"understands ({SCHEMA_VERSION})"
        )
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
