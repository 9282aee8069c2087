"""Every store test runs against each backend: SQLite in a file, PostgreSQL on a real server.

The PostgreSQL server is started once per session (Debian's binaries, a temporary cluster);
each test gets a fresh database in it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.store import JobStore, open_store
from tests.support.builders import Builders
from tests.support.postgres import PostgresServer, started_server


@pytest.fixture
def build() -> type[Builders]:
    return Builders


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = started_server()
    try:
        yield server
    finally:
        server.destroy()


@dataclass
class Backend:
    """One store backend with one database: ``opened()`` opens a store on it (again)."""

    name: str
    url: str

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[JobStore]:
        store = await open_store(self.url)
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path / 'deep' / 'h2k.db'}")
    server: PostgresServer = request.getfixturevalue("postgres")
    return Backend("postgresql", server.create_database())
