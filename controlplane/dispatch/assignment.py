"""Assigning queued jobs: run a scheduling pass, move each placed job to ASSIGNED, start it.

Only the replica holding the scheduler role assigns. The stream lease of a job is claimed
before its ASSIGNED transition, so from that moment no other replica follows it; the
transition itself re-checks the job's state, so a job cancelled meanwhile is skipped.
"""

from __future__ import annotations

import asyncio
import logging

from controlplane.dispatch.context import DispatchContext
from controlplane.dispatch.following import StreamFollower, span_attributes
from controlplane.dispatch.scheduling_pass import SchedulingPass
from controlplane.dispatch.streams import FollowedStream
from controlplane.metrics import observe_scheduling
from controlplane.models import AgentRecord, JobRecord, QueuedJob
from controlplane.placement import SchedulePlan
from protocol.conversion import utcnow
from protocol.errors import NotFound
from protocol.states import IllegalTransition, JobState
from runtime.tracing import context_from_traceparent, tracer

log = logging.getLogger(__name__)
_TRACER = tracer(__name__)


def _queued_seconds(job: JobRecord) -> float:
    """How long a just assigned job waited since it last entered the queue."""
    queued = [t.time for t in job.history if t.to_state is JobState.QUEUED]
    since = max(queued, default=job.submitted_at)
    return max(0.0, (job.updated_at - since).total_seconds())


class Assigner:
    """Places queued jobs on agents and hands each assignment to the stream follower."""

    def __init__(self, ctx: DispatchContext, follower: StreamFollower) -> None:
        self._store = ctx.store
        self._ownership = ctx.ownership
        self._requeuer = ctx.requeuer
        self._scheduling = SchedulingPass(ctx.store, ctx.policy.lease)
        self._follower = follower

    async def assign_queued_jobs(self) -> SchedulePlan:
        """One scheduling pass: start what fits now, then store why the rest waits."""
        if not await self._ownership.lead_scheduler():
            return SchedulePlan()  # another replica schedules
        now = utcnow()
        held_back = self._requeuer.held_back(now)
        planned = await self._scheduling.run(held_back, now)
        assigning = asyncio.gather(*(self._assign(job, agent) for job, agent in planned.placed))
        assignments = [(job.job_id, agent.name) for job, agent in planned.placed]
        if not planned.reasons:
            await assigning
            return SchedulePlan(assignments=assignments)
        # Concurrently: the store commits the writes together (group commit).
        _done, changed = await asyncio.gather(
            assigning, self._store.set_queue_reasons(planned.reasons, keep=held_back)
        )
        if changed:
            for kind, reason in planned.reasons.items():
                log.info("jobs wait kind=%r reason=%r", kind, reason)
        return SchedulePlan(assignments=assignments, waiting=dict(planned.reasons))

    async def _assign(self, job: QueuedJob, agent: AgentRecord) -> None:
        # The stream lease first: from the moment the job is ASSIGNED nobody else takes it.
        if not await self._ownership.claim(job.job_id):
            log.info("assignment skipped job_id=%s reason=another replica holds it", job.job_id)
            return
        try:
            record = await self._store.transition(
                job.job_id,
                JobState.ASSIGNED,
                f"assigned to agent {agent.name}",
                assigned_agent=agent.name,
                attempt=job.attempt + 1,
                queue_reason="",
            )
        except (IllegalTransition, NotFound) as exc:
            # Cancelled between the scheduling read and now.
            log.info("assignment skipped job_id=%s reason=%s", job.job_id, exc)
            return
        waited = _queued_seconds(record)
        observe_scheduling(waited)
        # The submit's span ended long ago, in another task: continue its trace explicitly.
        with _TRACER.start_as_current_span(
            "controlplane.schedule",
            context=context_from_traceparent(record.trace_context),
            attributes={**span_attributes(record, agent.name), "h2k.queued_seconds": waited},
        ):
            log.info(
                "job assigned job_id=%s agent=%s attempt=%d",
                job.job_id,
                agent.name,
                record.attempt,
            )
            stream = FollowedStream(job.job_id, agent.name, agent.address, record.attempt)
            self._follower.start(record, stream)
