"""Schemas as control planes before the shared schema history wrote them (verbatim).

SQLite numbered its steps 1-3 as the shared history does; PostgreSQL numbered its own way
(its 1 had trace_context already, its 2 was the leases, its 3 the kinds of needs).
"""

from __future__ import annotations

SQLITE_V1 = """
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

SQLITE_V2 = """
ALTER TABLE jobs ADD COLUMN trace_context TEXT NOT NULL DEFAULT ''
"""

SQLITE_V3 = """
ALTER TABLE jobs ADD COLUMN needs_kind TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_queue ON jobs (state, priority, submitted_at, job_id);
CREATE INDEX jobs_by_kind ON jobs (state, needs_kind, queue_reason, submitted_at)
"""

POSTGRES_V1 = """
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

POSTGRES_V2 = """
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

POSTGRES_V3 = """
ALTER TABLE jobs ADD COLUMN needs_kind TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_queue ON jobs (state, priority, submitted_at, job_id);
CREATE INDEX jobs_by_kind ON jobs (state, needs_kind, queue_reason, submitted_at);
"""

SQLITE = [SQLITE_V1, SQLITE_V2, SQLITE_V3]
POSTGRES = [POSTGRES_V1, POSTGRES_V2, POSTGRES_V3]
