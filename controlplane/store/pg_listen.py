"""LISTEN/NOTIFY between replicas: "job X changed" reaches every control plane.

Each replica keeps one dedicated connection that LISTENs on :data:`CHANNEL`. The store sends
``NOTIFY`` in the same transaction as each event or transition, so a notification arrives
only after the change is committed and readable. Notifications are hints, not data: the
receiver re-reads the store by seq. While the connection is down nothing is heard, so the
feed reports itself not live (watchers then poll by seq) and, once it is back, reports a
change of every job (anything may have been missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "h2k_job_changes"
RECONNECT_DELAY_SECONDS = 1.0
# A silent connection is checked this often (a dead server is noticed even when idle).
PING_SECONDS = 5.0


class ChangeFeed:
    """Calls ``on_change(job_id)`` for changes made by other replicas.

    ``on_change(None)`` means "any job may have changed"; ``on_live(bool)`` reports whether
    notifications are being received.
    """

    def __init__(
        self,
        url: str,
        instance_id: str,
        on_change: Callable[[str | None], None],
        on_live: Callable[[bool], None],
        channel: str = CHANNEL,
    ) -> None:
        self._url = url
        self._channel = channel
        self._prefix = f"{instance_id}:"
        self._on_change = on_change
        self._on_live = on_live
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="h2k-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        live = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=3
                ) as conn:
                    await conn.execute(f"LISTEN {self._channel}")
                    live = True
                    self._on_live(True)
                    log.info("change feed listening channel=%s", self._channel)
                    self._on_change(None)
                    await self._receive(conn)
            except psycopg.Error as exc:
                if live:
                    log.warning("change feed lost error=%s", str(exc).strip().splitlines()[:1])
                live = False
                self._on_live(False)
            await asyncio.sleep(RECONNECT_DELAY_SECONDS)  # reconnect backoff

    async def _receive(self, conn: psycopg.AsyncConnection[object]) -> None:
        while True:
            got_any = False
            async for note in conn.notifies(timeout=PING_SECONDS):
                got_any = True
                if note.payload.startswith(self._prefix):
                    continue  # our own change: the local hub has it already
                self._on_change(note.payload.partition(":")[2])
            if not got_any:
                await conn.execute("SELECT 1")
