"""The PostgreSQL store's transaction model: a pool of autocommit connections, one
committed transaction per write, and "cannot reach the database" as UNAVAILABLE.

Losing the database is not fatal: each call that cannot reach it raises
:class:`~protocol.errors.Unavailable` (the RPC answers UNAVAILABLE), and the pool connects
again by itself once the server is back.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from protocol.errors import Unavailable

Row = dict[str, Any]
Conn = psycopg.AsyncConnection[Row]

# How long an RPC waits for a pooled connection before it answers UNAVAILABLE.
CONNECT_WAIT_SECONDS = 3.0
# The pool gives up on one reconnection attempt after this long (its backoff doubles up to
# it) and starts afresh on the next request: recovery stays within seconds of the server.
RECONNECT_GIVE_UP_SECONDS = 8.0
# A pooled connection idle longer than this is checked (a round trip) before it is handed
# out; one returned more recently is handed out as it is. Under load every connection comes
# back within milliseconds, and a check per checkout cost about a tenth of a busy replica's
# CPU; a connection that broke meanwhile fails its first statement as UNAVAILABLE, as one
# could that broke just after a check.
CHECK_IDLE_SECONDS = 1.0


@asynccontextmanager
async def reachable() -> AsyncIterator[None]:
    """Turn "the database cannot be reached" into UNAVAILABLE for the caller."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unavailable(f"job store: database unavailable ({first_line})") from exc


async def _configure(conn: Conn) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


class Connections:
    """The store's pooled connections (dict rows, UTC, autocommit outside transactions)."""

    def __init__(self, url: str, max_connections: int) -> None:
        # When each pooled connection was last given back (see CHECK_IDLE_SECONDS).
        self._returned_at: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._pool: psycopg_pool.AsyncConnectionPool[Conn] = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=CONNECT_WAIT_SECONDS,
            reconnect_timeout=RECONNECT_GIVE_UP_SECONDS,
            check=self._check_if_idle,
            reset=self._returned,
            configure=_configure,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 3},
            name="h2k-store",
        )

    async def _returned(self, conn: Conn) -> None:
        self._returned_at[conn] = time.monotonic()

    async def _check_if_idle(self, conn: Conn) -> None:
        returned = self._returned_at.get(conn)
        if returned is None or time.monotonic() - returned > CHECK_IDLE_SECONDS:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=10)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection for reads (each statement commits by itself)."""
        async with reachable(), self._pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """One committed transaction (rolled back when the body raises)."""
        async with self.connection() as conn, conn.transaction():
            yield conn


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
