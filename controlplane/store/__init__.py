"""The job store: one interface (:class:`JobStore`), chosen by URL with :func:`open_store`."""

from __future__ import annotations

from pathlib import Path

from controlplane.store.base import ACTIVE_STATES, JobPage, JobStore
from controlplane.store.sqlite import SqliteStore

__all__ = ["ACTIVE_STATES", "JobPage", "JobStore", "SqliteStore", "open_store", "store_for_url"]

SQLITE_PREFIX = "sqlite:///"


def store_for_url(url: str) -> JobStore:
    """The store a URL names, not yet opened.

    Args:
        url: ``sqlite:///absolute/path.db`` (a ``postgresql://`` store comes later).

    Raises:
        ValueError: the URL names no store this control plane has.
    """
    if url.startswith(SQLITE_PREFIX):
        path = Path("/" + url.removeprefix(SQLITE_PREFIX).lstrip("/"))
        return SqliteStore(path)
    scheme = url.partition("://")[0] if "://" in url else url
    raise ValueError(f"--db: unsupported store {scheme!r}; use sqlite:///absolute/path.db")


async def open_store(url: str) -> JobStore:
    """Open the store a URL names, creating its schema (and parent directory) when new."""
    store = store_for_url(url)
    await store.open()
    return store
