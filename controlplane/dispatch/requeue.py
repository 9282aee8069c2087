"""Putting an ASSIGNED job back in the queue when nothing ran, and holding it back briefly.

A job the agent did not accept (full, unreachable, gone) goes back without using up a retry;
it then stays out of scheduling passes for ``requeue_holdoff`` so the same agent is not asked
again at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from controlplane.dispatch.streams import FollowedStream
from controlplane.progress import ProgressRecorder
from controlplane.store import JobStore
from protocol.conversion import utcnow
from protocol.states import JobState

log = logging.getLogger(__name__)


class Requeuer:
    """Requeues jobs whose dispatch did not take, and knows which are held back."""

    def __init__(
        self,
        store: JobStore,
        recorder: ProgressRecorder,
        holdoff: timedelta,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._recorder = recorder
        self._holdoff = holdoff
        self._wake = wake
        self._held: dict[str, datetime] = {}

    def held_back(self, now: datetime) -> tuple[str, ...]:
        """Jobs that stay out of scheduling passes now."""
        self._held = {j: until for j, until in self._held.items() if until > now}
        return tuple(self._held)

    async def requeue(self, stream: FollowedStream, reason: str) -> None:
        """Put an ASSIGNED job back in the queue; nothing ran, so its attempt is given back.

        A job whose cancel was asked for ends CANCELLED instead.
        """
        async with self._recorder.locked(stream.job_id):
            job = await self._store.get_job(stream.job_id)
            if job.state is not JobState.ASSIGNED or job.attempt != stream.attempt:
                return
            if job.cancel_requested:
                await self._recorder.end_cancelled(job, f"cancelled before it started ({reason})")
                return
            await self._store.transition(
                job.job_id,
                JobState.QUEUED,
                reason,
                queue_reason=reason,
                assigned_agent=None,
                attempt=max(0, job.attempt - 1),
            )
        self._held[job.job_id] = utcnow() + self._holdoff
        log.warning("job requeued job_id=%s reason=%r", job.job_id, reason)
        self._wake()
