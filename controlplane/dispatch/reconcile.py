"""Matching the jobs an agent says it runs (at registration and in heartbeats) with ours.

Jobs it runs that are not (any more) assigned to it are cancelled there; running jobs
assigned to it that nobody follows are re-attached.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from controlplane.dispatch.context import DispatchContext
from controlplane.dispatch.following import StreamFollower
from controlplane.dispatch.streams import FollowedStream
from protocol.errors import NotFound
from protocol.states import JobState

log = logging.getLogger(__name__)

FOLLOWED_STATES = frozenset({JobState.RUNNING, JobState.PROGRESSING})


class AgentReconciler:
    """Cancels an agent's orphans and follows its unfollowed jobs."""

    def __init__(self, ctx: DispatchContext, follower: StreamFollower) -> None:
        self._store = ctx.store
        self._ownership = ctx.ownership
        self._streams = ctx.streams
        self._cancels = ctx.cancels
        self._follower = follower

    async def reconcile_agent(self, name: str, reported_job_ids: Sequence[str]) -> None:
        """Match the jobs agent ``name`` says it runs with the jobs assigned to it."""
        assigned = await self._store.running_jobs_of(name)
        try:
            address = (await self._store.get_agent(name)).address
        except NotFound:
            return
        for job_id in reported_job_ids:
            if job_id not in assigned:
                log.warning("orphan job on agent job_id=%s agent=%s", job_id, name)
                stream = FollowedStream(job_id, name, address, 0)
                self._cancels.send(stream, f"the job is not assigned to agent {name} any more")
        for job_id in assigned:
            if job_id in self._streams:
                continue
            job = await self._store.get_job(job_id)
            if job.state in FOLLOWED_STATES and await self._ownership.claim(job_id):
                log.info("following unfollowed job job_id=%s agent=%s", job_id, name)
                self._follower.follow_again(FollowedStream(job_id, name, address, job.attempt))
