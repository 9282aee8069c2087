"""The job store: one interface (:class:`JobStore`), chosen by URL with :func:`open_store`.

``sqlite:///path`` is the embedded default for one control plane; ``postgresql://...`` is
shared by several control-plane replicas (psycopg and its pool are imported only then).
"""

from __future__ import annotations

from pathlib import Path

from controlplane.store.base import (
    ACTIVE_STATES,
    Assignment,
    JobMark,
    JobPage,
    JobStatus,
    JobStore,
    ProgressWrite,
)
from controlplane.store.sqlite import SqliteStore

__all__ = [
    "ACTIVE_STATES",
    "Assignment",
    "JobMark",
    "JobPage",
    "JobStatus",
    "JobStore",
    "ProgressWrite",
    "SqliteStore",
    "open_store",
    "store_for_url",
]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def store_for_url(url: str) -> JobStore:
    """The store a URL names, not yet opened.

    Args:
        url: ``sqlite:///absolute/path.db`` or ``postgresql://user:password@host/database``
            (any libpq URL, e.g. with ``?sslmode=require``).

    Raises:
        ValueError: the URL names no store this control plane has.
    """
    if url.startswith(SQLITE_PREFIX):
        path = Path("/" + url.removeprefix(SQLITE_PREFIX).lstrip("/"))
        return SqliteStore(path)
    if url.startswith(POSTGRES_SCHEMES):
        from controlplane.store.postgres import PostgresStore

        return PostgresStore(url)
    scheme = url.partition("://")[0] if "://" in url else url
    raise ValueError(
        f"--db: unsupported store {scheme!r}; use sqlite:///absolute/path.db or "
        "postgresql://user@host/database"
    )


async def open_store(url: str) -> JobStore:
    """Open the store a URL names, creating or migrating its schema when needed."""
    store = store_for_url(url)
    await store.open()
    return store
