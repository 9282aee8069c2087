"""Assigning queued jobs: run a scheduling pass, move each placed job to ASSIGNED, start it.

Only the replica holding the scheduler role assigns. A pass's placements are stored with one
store call (:meth:`JobStore.assign_jobs`), not one per job. The stream leases of the jobs are
granted before their ASSIGNED transition (one store call), each to the live replica with the
fewest streams, so from that moment no other replica follows them; the store moves only jobs
still QUEUED, so a job cancelled (or assigned) meanwhile is skipped. This replica starts the
jobs granted to itself; the others are told (one store call) and start theirs
(:meth:`controlplane.dispatch.takeover.StreamTakeover.follow_granted`). The jobs left waiting
get their kind's reason (how often a busy kind's counts are rewritten: :mod:`.queue_reasons`).
"""

from __future__ import annotations

import asyncio
import logging

from controlplane.dispatch.context import DispatchContext
from controlplane.dispatch.following import StreamFollower, span_attributes
from controlplane.dispatch.queue_reasons import QueueReasons
from controlplane.dispatch.scheduling_pass import SchedulingPass
from controlplane.dispatch.streams import FollowedStream
from controlplane.metrics import observe_scheduling
from controlplane.models import AgentRecord, JobRecord, QueuedJob
from controlplane.placement import SchedulePlan
from controlplane.store import Assignment
from protocol.conversion import utcnow
from protocol.states import JobState
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
        self._reasons = QueueReasons(refresh=ctx.policy.tick_seconds)
        self._follower = follower

    async def assign_queued_jobs(self) -> SchedulePlan:
        """One scheduling pass: start what fits now, then store why the rest waits."""
        if not await self._ownership.lead_scheduler():
            return SchedulePlan()  # another replica schedules
        now = utcnow()
        held_back = self._requeuer.held_back(now)
        planned = await self._scheduling.run(held_back, now)
        assigning = self._assign(planned.placed)
        if not planned.reasons:
            return SchedulePlan(assignments=await assigning)
        reasons = self._reasons.to_store(planned.reasons, planned.busy)
        # Concurrently: the store commits the writes together (group commit).
        assignments, changed = await asyncio.gather(
            assigning, self._store.set_queue_reasons(reasons, keep=held_back)
        )
        if changed:
            for kind, reason in reasons.items():
                log.info("jobs wait kind=%r reason=%r", kind, reason)
        return SchedulePlan(assignments=assignments, waiting=dict(planned.reasons))

    async def _assign(self, placed: list[tuple[QueuedJob, AgentRecord]]) -> list[tuple[str, str]]:
        """Move a pass's placements to ASSIGNED in one store call and start each one.

        Returns the (job_id, agent) pairs assigned.
        """
        if not placed:
            return []
        agents = {job.job_id: agent for job, agent in placed}
        # The stream leases first: from the moment a job is ASSIGNED nobody else takes it.
        owners = await self._ownership.choose_owners(list(agents))
        granted = set(await self._ownership.grant_many(owners))
        for job_id in agents.keys() - granted:
            log.info("assignment skipped job_id=%s reason=another replica holds it", job_id)
        records = await self._store.assign_jobs(
            [
                Assignment(job.job_id, agent.name, job.attempt + 1)
                for job, agent in placed
                if job.job_id in granted
            ]
        )
        for job_id in granted - {r.job_id for r in records}:
            # Cancelled (or taken) between the scheduling read and now.
            log.info("assignment skipped job_id=%s reason=no longer queued", job_id)
        for record in records:
            self._start(record, agents[record.job_id], owners[record.job_id])
        await self._ownership.announce_grants({owners[r.job_id] for r in records})
        return [(r.job_id, agents[r.job_id].name) for r in records]

    def _start(self, record: JobRecord, agent: AgentRecord, relay: str) -> None:
        waited = _queued_seconds(record)
        observe_scheduling(waited)
        # The submit's span ended long ago, in another task: continue its trace explicitly.
        with _TRACER.start_as_current_span(
            "controlplane.schedule",
            context=context_from_traceparent(record.trace_context),
            attributes={**span_attributes(record, agent.name), "h2k.queued_seconds": waited},
        ):
            log.info(
                "job assigned job_id=%s agent=%s attempt=%d relay=%s",
                record.job_id,
                agent.name,
                record.attempt,
                relay,
            )
            if relay != self._ownership.owner:
                return  # that replica starts it (told by announce_grants)
            self._ownership.starting(record.job_id, record.attempt)
            stream = FollowedStream(record.job_id, agent.name, agent.address, record.attempt)
            self._follower.start(record, stream)
