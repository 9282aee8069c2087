"""The SQLite store's transaction model: one thread owns the connection; group commit.

Every call runs on one thread that owns the connection (WAL, synchronous=FULL), so the event
loop never waits on disk. Writes that arrive while that thread is busy share one ``BEGIN
IMMEDIATE`` transaction and one fsync; each runs in its own savepoint, so a failing write
leaves the others alone, and each caller resumes only after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# A write waiting for the next group commit: the work (inside the transaction), what turns
# its result into the caller's answer (after the commit), and the caller's future.
_PendingWrite = tuple[Callable[[], Any], Callable[[Any], Any], "asyncio.Future[Any]"]


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    """Hand a batched call's outcome to its caller (unless the caller gave up)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _settle_all(answers: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, answer in answers:
        _settle(future, answer)


class StoreThread:
    """The one thread that owns a SQLite connection, and the writes waiting for it."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h2k-sqlite")
        self.conn: sqlite3.Connection | None = None
        self._writes: deque[_PendingWrite] = deque()
        # The group commit on its way to the store thread, if any: writes arriving meanwhile
        # wait for the next one instead of each sending the thread a task of its own.
        self._draining: asyncio.Future[None] | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise RuntimeError("the store is not open")
        return self.conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def connect(self, path: Path) -> sqlite3.Connection:
        """Open the database file (on the store thread, before any other call)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk (WAL fsynced) before SubmitJob answers.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    async def close(self) -> None:
        """Close the connection (if open) and stop the thread."""
        if self.conn is not None:
            await self.run(self._disconnect)
        self._executor.shutdown(wait=True)

    def _disconnect(self) -> None:
        if self.conn is not None:
            # Every commit is already durable (WAL, synchronous=FULL); folding the WAL into
            # the database file leaves a tidy single file behind.
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.close()
            self.conn = None

    async def batched(self, work: Callable[[], Any], after: Callable[[Any], T]) -> T:
        """Run ``work`` in a write transaction shared with the writes waiting meanwhile;
        ``after`` turns the work's result into the caller's answer once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._writes.append((work, after, future))
        if self._draining is None:
            self._drain(loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send the store thread one group commit; once it is done, another if writes wait."""
        self._draining = loop.run_in_executor(self._executor, self._write_pending, loop)

        def done(_: asyncio.Future[None]) -> None:
            self._draining = None
            if self._writes:
                self._drain(loop)

        self._draining.add_done_callback(done)

    def _write_pending(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit every waiting write in one transaction (a no-op when none waits)."""
        batch = []
        while self._writes:
            batch.append(self._writes.popleft())
        if not batch:
            return
        outcomes: list[Any] = []
        try:
            with self.write() as conn:
                for work, _after, _future in batch:
                    conn.execute("SAVEPOINT write")
                    try:
                        outcomes.append(work())
                    except Exception as exc:
                        conn.execute("ROLLBACK TO write")
                        outcomes.append(exc)
                    conn.execute("RELEASE write")
        except Exception as exc:
            outcomes = [exc] * len(batch)
        answers = []
        for (_work, after, future), outcome in zip(batch, outcomes, strict=True):
            answer = outcome
            if not isinstance(outcome, Exception):
                try:
                    answer = after(outcome)
                except Exception as exc:
                    answer = exc
            answers.append((future, answer))
        # One hand-over to the event loop for the whole group.
        loop.call_soon_threadsafe(_settle_all, answers)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE so readers never see half of it."""
        conn = self.db
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
