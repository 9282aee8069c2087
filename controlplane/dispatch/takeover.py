"""Several replicas: start the streams granted to this replica, keep its leases, take over orphans.

A no-op with a single-replica store. The scheduler grants a new job's stream to some live
replica (:mod:`controlplane.dispatch.assignment`); that replica, woken by the store's dispatch
feed (or on its next tick, should the feed have missed it), confirms the lease and starts the
attempt (:meth:`StreamTakeover.follow_granted`). Every tick a task of its own renews the
leases (:meth:`StreamTakeover.renew_leases`), so a long scheduling pass or a burst of grants
cannot let them lapse; and the dispatcher's loop follows again a job it holds but no longer
follows (its task ended while the store was unreachable) and claims and re-attaches, from the
last stored seq, a job whose owner died (:mod:`controlplane.ownership` has the leases). Only
an attempt this replica was granted and never started is started; every other one is
re-attached (AttachJob), so no attempt starts twice. Starting and re-attaching run in the
dispatcher's loop, one after the other, never interleaved.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from controlplane.dispatch.context import DispatchContext
from controlplane.dispatch.following import StreamFollower, span_attributes
from controlplane.dispatch.streams import FollowedStream
from controlplane.models import AgentRecord, JobRecord
from controlplane.store import ACTIVE_STATES
from protocol.states import JobState
from runtime.tracing import context_from_traceparent, tracer

log = logging.getLogger(__name__)
_TRACER = tracer(__name__)


class StreamTakeover:
    """Starts granted streams, renews stream leases and adopts the streams of dead replicas."""

    def __init__(self, ctx: DispatchContext, follower: StreamFollower) -> None:
        self._store = ctx.store
        self._ownership = ctx.ownership
        self._streams = ctx.streams
        self._follower = follower

    async def renew_leases(self) -> None:
        """Renew this replica's presence and leases; stop following the streams whose lease
        was lost. Runs in a task of its own, every tick, beside the dispatcher's loop."""
        if not self._ownership.replicated:
            return
        await self._ownership.announce()
        held = await self._ownership.renew()
        for job_id in self._streams.job_ids():
            if job_id not in held:
                self._streams.abandon(job_id)

    async def keep_streams(self) -> None:
        """Claim the unowned streams and follow every held one nobody here follows."""
        if not self._ownership.replicated:
            return
        taken_over = set()
        for job_id in await self._ownership.unowned():
            if await self._ownership.claim(job_id):
                log.info("taking over stream job_id=%s owner=%s", job_id, self._ownership.owner)
                taken_over.add(job_id)
        await self._follow(self._ownership.held() | taken_over, taken_over)

    async def follow_granted(self) -> None:
        """Confirm the leases of ASSIGNED jobs granted to this replica and start them."""
        if not self._ownership.replicated:
            return
        await self._follow(await self._ownership.confirm_granted(), ())

    async def _follow(self, job_ids: Collection[str], taken_over: Collection[str]) -> None:
        """Follow each held job nobody here follows: start it when granted and never
        started here, otherwise re-attach.

        The ASSIGNED jobs and the agents are read with one store call each, not per job: a
        pass's grants arrive together, and this runs in the dispatcher's loop, which also
        renews the leases.
        """
        wanted = sorted(set(job_ids) - set(self._streams.job_ids()))
        if not wanted:
            return
        assigned_page = await self._store.list_jobs(states=[JobState.ASSIGNED], limit=None)
        assigned = {j.job_id: j for j in assigned_page.jobs}
        agents = {a.name: a for a in await self._store.list_agents()}
        for job_id in wanted:
            job = assigned.get(job_id) or await self._store.get_job(job_id)
            if job.state not in ACTIVE_STATES or job_id in self._streams:
                continue
            if job_id in taken_over:
                # Its former owner may have started it: only ever re-attach here.
                self._ownership.starting(job_id, job.attempt)
            if job.state is JobState.ASSIGNED and self._ownership.may_start(job_id, job.attempt):
                agent = agents.get(job.assigned_agent or "")
                if agent is not None:  # else the supervisor ends it: an unknown agent is lost
                    self._start(job, agent)
            else:
                self._ownership.starting(job_id, job.attempt)
                await self._follower.resume(job)

    def _start(self, job: JobRecord, agent: AgentRecord) -> None:
        self._ownership.starting(job.job_id, job.attempt)
        log.info(
            "relaying granted job job_id=%s agent=%s attempt=%d owner=%s",
            job.job_id,
            agent.name,
            job.attempt,
            self._ownership.owner,
        )
        # The submit's span ended long ago, in another process: continue its trace.
        with _TRACER.start_as_current_span(
            "controlplane.relay",
            context=context_from_traceparent(job.trace_context),
            attributes=span_attributes(job, agent.name),
        ):
            stream = FollowedStream(job.job_id, agent.name, agent.address, job.attempt)
            self._follower.start(job, stream)
