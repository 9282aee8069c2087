"""The streams this replica follows: one task per job attempt, found by job id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from protocol.errors import Unavailable

log = logging.getLogger(__name__)


@dataclass
class FollowedStream:
    """One attempt of a job on one agent, as the control plane follows it."""

    job_id: str
    agent: str
    address: str
    attempt: int
    received: int = 0
    cancel_sent: bool = False


class StreamTasks:
    """The task following each job's stream; a job has at most one."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._tasks

    def job_ids(self) -> list[str]:
        return list(self._tasks)

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    def spawn(self, stream: FollowedStream, body: Coroutine[Any, Any, None]) -> None:
        """Follow ``stream`` with ``body`` in a task of its own; errors are logged, not raised."""

        async def guarded() -> None:
            try:
                await body
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:
                # Followed again once the store is back (keep_streams, or the next heartbeat).
                log.warning("following job paused job_id=%s error=%s", stream.job_id, exc.message)
            except Exception:
                log.exception("following job failed job_id=%s", stream.job_id)

        task = asyncio.create_task(guarded(), name=f"h2k-job-{stream.job_id}")
        self._tasks[stream.job_id] = task
        task.add_done_callback(lambda t: self._forget(stream.job_id, t))

    def abandon(self, job_id: str) -> None:
        """Stop following a job's stream (the control plane ended the attempt itself)."""
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()

    def _forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(job_id) is task:
            del self._tasks[job_id]
