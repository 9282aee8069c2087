"""Supervising active jobs every tick: lost agents, deadlines, drains, pending cancels, retries.

What to do is decided by the pure :func:`controlplane.leases.review_active_jobs`; this module
acts on its verdicts for the jobs whose streams this replica holds, and queues again the
RETRYING jobs whose backoff is over (:func:`controlplane.retry.next_attempt_at`).
"""

from __future__ import annotations

import logging

from controlplane.dispatch.context import DispatchContext
from controlplane.dispatch.streams import FollowedStream
from controlplane.leases import Action, Verdict, review_active_jobs
from controlplane.retry import next_attempt_at
from controlplane.store import ACTIVE_STATES
from protocol.conversion import utcnow
from protocol.errors import ErrorCode
from protocol.states import IllegalTransition, JobState

log = logging.getLogger(__name__)


class Supervisor:
    """Ends attempts whose agent was lost or whose deadline passed; releases due retries."""

    def __init__(self, ctx: DispatchContext) -> None:
        self._store = ctx.store
        self._recorder = ctx.recorder
        self._ownership = ctx.ownership
        self._policy = ctx.policy
        self._streams = ctx.streams
        self._cancels = ctx.cancels
        self._requeuer = ctx.requeuer
        self._leases_since = utcnow()

    def count_leases_from_now(self) -> None:
        """Heartbeats could not be received or stored until now: leases start over."""
        self._leases_since = utcnow()

    async def supervise(self) -> list[Verdict]:
        """Act on lost agents, attempts past their deadline, drains and pending cancels."""
        # Fields only: the review needs no history (reading it for every active job each
        # tick was a tenth of the control plane's time with a few hundred jobs running).
        page = await self._store.list_jobs(states=ACTIVE_STATES, limit=None, with_history=False)
        active = page.jobs
        # Each replica looks after the jobs whose streams it holds.
        active = [j for j in active if self._ownership.holds(j.job_id)]
        if not active:
            self._cancels.forget_all()
            return []
        agents = await self._store.list_agents()
        now = utcnow()
        leases = self._policy.leases()
        verdicts = review_active_jobs(active, agents, now, leases, self._leases_since)
        addresses = {a.name: a.address for a in agents}
        for verdict in verdicts:
            address = addresses.get(verdict.agent, "")
            stream = FollowedStream(verdict.job_id, verdict.agent, address, verdict.attempt)
            code = verdict.action.ends_attempt_with
            if verdict.action is Action.TIMEOUT:
                self._cancels.send(stream, verdict.message)
            if code is not None:
                await self._end_attempt(stream, code, verdict.message)
            elif self._cancels.due(verdict.job_id, now):
                self._cancels.send(stream, verdict.message)
        return verdicts

    async def _end_attempt(self, stream: FollowedStream, code: ErrorCode, message: str) -> None:
        log.warning(
            "ending attempt job_id=%s agent=%s code=%s reason=%r",
            stream.job_id,
            stream.agent,
            code,
            message,
        )
        self._streams.abandon(stream.job_id)
        job = await self._store.get_job(stream.job_id)
        if job.state is JobState.ASSIGNED:
            await self._requeuer.requeue(stream, message)
            return
        await self._recorder.end_attempt(
            stream.job_id, stream.attempt, code=code, message=message, agent=stream.agent
        )

    async def release_retries(self) -> int:
        """Queue again every RETRYING job whose backoff is over; returns how many."""
        if not await self._ownership.lead_scheduler():
            return 0
        retrying = (await self._store.list_jobs(states=[JobState.RETRYING], limit=None)).jobs
        now = utcnow()
        released = 0
        for job in retrying:
            due = next_attempt_at(job, self._recorder.retry_policy)
            if due is None or due > now:
                continue
            reason = f"waiting for an agent (attempt {job.attempt + 1} next)"
            try:
                await self._store.transition(
                    job.job_id, JobState.QUEUED, "back in the queue", queue_reason=reason
                )
            except IllegalTransition:
                continue  # cancelled meanwhile
            log.info("job queued again job_id=%s after_attempt=%d", job.job_id, job.attempt)
            released += 1
        return released
