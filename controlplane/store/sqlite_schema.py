"""The SQLite schema of the job store: the shared history, versioned with ``PRAGMA user_version``.

SQLite's numbering was already the shared one for versions 1 to 3 (PostgreSQL's was not; see
:mod:`controlplane.store.postgres_schema`), so a database of any earlier control plane is
simply upgraded from the version it records.
"""

from __future__ import annotations

import sqlite3

from controlplane.store.schema import SCHEMA_VERSION, SQLITE, step_sql, step_statements

__all__ = ["SCHEMA_VERSION", "migrate"]

# The first schema, as the first control plane wrote it (tests build old databases with it).
_SCHEMA_V1 = step_sql(1, SQLITE)


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
            for statement in step_statements(step, SQLITE):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
