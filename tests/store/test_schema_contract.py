"""What used to drift between the backends, pinned for SQLite and PostgreSQL alike: a new job's
history, and what a schema version means (tables, columns, indexes), also after upgrading a
database that an earlier control plane wrote."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from controlplane.store import rules, schema
from protocol.states import JobState
from tests.store import legacy_schemas
from tests.store.conftest import Backend

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
STORED_NOW = NOW.isoformat(timespec="microseconds")  # as SQLite stores it

# Every table of schema version 5 and its columns in order (bookkeeping tables left out).
TABLES_V5 = {
    "agents": [
        "name",
        "address",
        "capabilities",
        "max_concurrent_jobs",
        "cordoned",
        "draining",
        "drain_deadline",
        "registered_at",
        "last_heartbeat",
        "version",
    ],
    "job_events": ["job_id", "seq", "event"],
    "job_streams": ["job_id", "owner", "expires_at"],
    "job_transitions": ["id", "job_id", "from_state", "to_state", "time", "reason", "attempt"],
    "jobs": [
        "job_id",
        "spec",
        "fingerprint",
        "state",
        "priority",
        "attempt",
        "assigned_agent",
        "queue_reason",
        "result",
        "error",
        "submitted_at",
        "updated_at",
        "started_at",
        "finished_at",
        "last_seq",
        "phase",
        "progress_percent",
        "cancel_requested",
        "trace_context",
        "needs_kind",
    ],
    "migrations": [
        "migration_id",
        "spec",
        "fingerprint",
        "state",
        "stage",
        "source_key",
        "reason",
        "cancel_requested",
        "history",
        "outputs",
        "submitted_at",
        "updated_at",
        "finished_at",
    ],
    "roles": ["name", "owner", "expires_at"],
}
INDEXES_V5 = [
    "job_streams_by_owner",
    "job_transitions_by_job",
    "jobs_by_kind",
    "jobs_by_state",
    "jobs_by_submission",
    "jobs_queue",
    "migrations_by_state",
]


def schema_of(backend: Backend) -> tuple[int, dict[str, list[str]], list[str]]:
    """The version a database records, its tables with their columns, and its indexes."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.url.removeprefix("sqlite://")) as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            names = [
                n
                for (n,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            tables = {n: [c[1] for c in conn.execute(f"PRAGMA table_info({n})")] for n in names}
            indexes = [
                n
                for (n,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' "
                    "AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name"
                )
            ]
        return version, tables, indexes
    with psycopg.connect(backend.url) as conn:
        (version,) = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        tables = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name != 'schema_migrations' "
            "ORDER BY table_name, ordinal_position"
        ):
            tables.setdefault(table, []).append(column)
        indexes = [
            n
            for (n,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND indexname NOT LIKE '%%_pkey' ORDER BY indexname"
            )
        ]
    return version, tables, indexes


async def test_a_new_job_gets_the_same_history_in_every_backend(backend, build):
    spec = build.job_spec("job-1")
    async with backend.opened() as store:
        job, _ = await store.create_job(spec, NOW)
        again = await store.get_job("job-1")
    history = [(t.from_state, t.to_state, t.time, t.reason, t.attempt) for t in again.history]
    assert history == [
        (
            JobState.CREATED,
            JobState.VALIDATED,
            NOW,
            f"spec valid; submitted by {spec.audit.requested_by}",
            0,
        ),
        (JobState.VALIDATED, JobState.QUEUED, NOW, "waiting for an agent", 0),
    ]
    # The path is the state table's own, not one written out by a backend.
    assert [history[0][0]] + [h[1] for h in history] == list(rules.ADMISSION_PATH)
    assert job.history == again.history
    assert (job.state, job.updated_at) == (JobState.QUEUED, NOW)


async def test_a_schema_version_is_the_same_schema_in_every_backend(backend):
    async with backend.opened():
        pass
    assert schema.SCHEMA_VERSION == 5
    assert schema_of(backend) == (5, TABLES_V5, INDEXES_V5)


def _write_legacy_database(backend: Backend, version: int, spec_json: str) -> None:
    """A database as a control plane before the shared history left it, with one job."""
    if backend.name == "sqlite":
        path = Path(backend.url.removeprefix("sqlite://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as conn:
            for ddl in legacy_schemas.SQLITE[:version]:
                conn.executescript(ddl)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute(
                "INSERT INTO jobs (job_id, spec, fingerprint, state, priority, submitted_at, "
                "updated_at) VALUES ('old', ?, 'f', 'QUEUED', 5, ?, ?)",
                (spec_json, STORED_NOW, STORED_NOW),
            )
        return
    with psycopg.connect(backend.url) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for number, ddl in enumerate(legacy_schemas.POSTGRES[:version], start=1):
            conn.execute(ddl.encode())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        conn.execute(
            "INSERT INTO jobs (job_id, spec, fingerprint, state, priority, submitted_at, "
            "updated_at) VALUES ('old', %s, 'f', 'QUEUED', 5, %s, %s)",
            (spec_json, NOW, NOW),
        )


@pytest.mark.parametrize("legacy_version", [1, 2, 3])
async def test_a_database_of_an_earlier_control_plane_is_upgraded(backend, build, legacy_version):
    spec = build.job_spec("old")
    _write_legacy_database(backend, legacy_version, spec.model_dump_json())
    async with backend.opened() as store:
        old = await store.get_job("old")
        summary = await store.queue_summary()
        new, created = await store.create_job(build.job_spec("new"), NOW, "00-trace")
    assert (old.spec, old.state, old.submitted_at) == (spec, JobState.QUEUED, NOW)
    assert [k.count for k in summary] == [1]  # the old job got its kind when the store opened
    assert created and new.trace_context == "00-trace"
    assert schema_of(backend) == (5, TABLES_V5, INDEXES_V5)
    async with backend.opened() as store:  # a second open finds nothing to do
        assert (await store.get_job("new")).state is JobState.QUEUED
    if backend.name == "postgresql":
        with psycopg.connect(backend.url) as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version")
            # An earlier control plane now refuses the database (its newest was 3).
            assert rows.fetchall() == [(1,), (2,), (3,), (4,), (5,)]
