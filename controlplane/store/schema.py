"""The one schema history of the job store: numbered steps, the same in every backend.

Version N means the same tables and columns in SQLite and PostgreSQL. Each step is written
once; the few types the dialects spell differently are placeholders (``{time}``, ``{flag}``
...) that :func:`step_sql` fills in. How a backend records its version and runs the steps
is its own (``sqlite_schema``, ``postgres_schema``). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

# Version 1: jobs, their history and events, agents.
_JOBS_AND_AGENTS = """
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
    submitted_at     {time} NOT NULL,
    updated_at       {time} NOT NULL,
    started_at       {time},
    finished_at      {time},
    last_seq         INTEGER NOT NULL DEFAULT 0,
    phase            TEXT NOT NULL DEFAULT '',
    progress_percent {real} NOT NULL DEFAULT 0,
    cancel_requested {flag} NOT NULL DEFAULT {false}
);
CREATE INDEX jobs_by_state ON jobs (state, submitted_at);
CREATE INDEX jobs_by_submission ON jobs (submitted_at, job_id);

CREATE TABLE job_transitions (
    id         {serial_key},
    job_id     TEXT NOT NULL REFERENCES jobs (job_id),
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    time       {time} NOT NULL,
    reason     TEXT NOT NULL,
    attempt    INTEGER NOT NULL
);
CREATE INDEX job_transitions_by_job ON job_transitions (job_id, id);

CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs (job_id),
    seq    INTEGER NOT NULL,
    event  TEXT NOT NULL,                -- ProgressEvent as JSON
    PRIMARY KEY (job_id, seq)
){keyed_table};

CREATE TABLE agents (
    name                TEXT PRIMARY KEY,
    address             TEXT NOT NULL,
    capabilities        TEXT NOT NULL,   -- Capabilities as JSON
    max_concurrent_jobs INTEGER NOT NULL,
    cordoned            {flag} NOT NULL DEFAULT {false},
    draining            {flag} NOT NULL DEFAULT {false},
    drain_deadline      {time},
    registered_at       {time} NOT NULL,
    last_heartbeat      {time} NOT NULL,
    version             TEXT NOT NULL DEFAULT ''
)
"""

# Version 2: the W3C traceparent of the submit, so a job's dispatch joins its trace.
_TRACE_CONTEXT = """
ALTER TABLE jobs ADD COLUMN trace_context TEXT NOT NULL DEFAULT ''
"""

# Version 3: the job's kind of needs (controlplane.capabilities.needs_kind) and the queue in
# scheduling order, so a scheduling pass reads only jobs some agent can take now. Jobs stored
# before have an empty kind; the store fills it in when it opens.
_NEEDS_KIND = """
ALTER TABLE jobs ADD COLUMN needs_kind TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_queue ON jobs (state, priority, submitted_at, job_id);
CREATE INDEX jobs_by_kind ON jobs (state, needs_kind, queue_reason, submitted_at)
"""

# Version 4: leases of several replicas, in database time (see controlplane/ownership.py).
# job_streams: which replica follows a job's ExecuteJob/AttachJob stream; roles: singleton
# duties such as the scheduler. Only PostgreSQL writes them (one control plane owns a SQLite
# file), but both have them so that a version is one schema.
_LEASES = """
CREATE TABLE job_streams (
    job_id     TEXT PRIMARY KEY REFERENCES jobs (job_id),
    owner      TEXT NOT NULL,
    expires_at {time} NOT NULL
);
CREATE INDEX job_streams_by_owner ON job_streams (owner);

CREATE TABLE roles (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at {time} NOT NULL
)
"""

# Version 5: VM migrations (controlplane/migrations): one row each, its history as JSON; the
# disk jobs it owns are ordinary jobs whose ids start with the migration id.
_MIGRATIONS = """
CREATE TABLE migrations (
    migration_id     TEXT PRIMARY KEY,
    spec             TEXT NOT NULL,      -- MigrationSpec as JSON
    fingerprint      TEXT NOT NULL,
    state            TEXT NOT NULL,
    stage            TEXT NOT NULL,
    source_key       TEXT NOT NULL DEFAULT '',
    reason           TEXT NOT NULL DEFAULT '',
    cancel_requested {flag} NOT NULL DEFAULT {false},
    history          TEXT NOT NULL,      -- MigrationTransitions as JSON
    outputs          TEXT NOT NULL DEFAULT '[]',
    submitted_at     {time} NOT NULL,
    updated_at       {time} NOT NULL,
    finished_at      {time}
);
CREATE INDEX migrations_by_state ON migrations (state, submitted_at, migration_id)
"""

STEPS: dict[int, str] = {
    1: _JOBS_AND_AGENTS,
    2: _TRACE_CONTEXT,
    3: _NEEDS_KIND,
    4: _LEASES,
    5: _MIGRATIONS,
}
SCHEMA_VERSION = max(STEPS)


@dataclass(frozen=True)
class Dialect:
    """How one backend spells the types the steps leave open."""

    name: str
    time: str
    flag: str
    false: str
    real: str
    serial_key: str
    keyed_table: str


SQLITE = Dialect(
    name="sqlite",
    time="TEXT",  # ISO 8601, UTC, microseconds
    flag="INTEGER",
    false="0",
    real="REAL",
    serial_key="INTEGER PRIMARY KEY AUTOINCREMENT",
    keyed_table=" WITHOUT ROWID",
)
POSTGRES = Dialect(
    name="postgresql",
    time="TIMESTAMPTZ",
    flag="BOOLEAN",
    false="FALSE",
    real="DOUBLE PRECISION",
    serial_key="BIGSERIAL PRIMARY KEY",
    keyed_table="",
)


def step_sql(version: int, dialect: Dialect) -> str:
    """The DDL of one step in ``dialect``: statements separated by ``;``."""
    return STEPS[version].format(
        time=dialect.time,
        flag=dialect.flag,
        false=dialect.false,
        real=dialect.real,
        serial_key=dialect.serial_key,
        keyed_table=dialect.keyed_table,
    )


def step_statements(version: int, dialect: Dialect) -> list[str]:
    """The statements of one step in ``dialect``, one by one."""
    return [s.strip() for s in step_sql(version, dialect).split(";") if s.strip()]
