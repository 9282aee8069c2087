"""Several replicas: keep this replica's stream leases, let go of lost ones, take over orphans.

A no-op with a single-replica store. A job this replica holds but no longer follows (its task
ended while the store was unreachable) is followed again; a job whose owner died is claimed
and re-attached from the last stored seq (:mod:`controlplane.ownership` has the leases).
"""

from __future__ import annotations

import logging

from controlplane.dispatch.context import DispatchContext
from controlplane.dispatch.following import StreamFollower
from controlplane.store import ACTIVE_STATES

log = logging.getLogger(__name__)


class StreamTakeover:
    """Renews stream leases every tick and adopts the streams of dead replicas."""

    def __init__(self, ctx: DispatchContext, follower: StreamFollower) -> None:
        self._store = ctx.store
        self._ownership = ctx.ownership
        self._streams = ctx.streams
        self._follower = follower

    async def keep_streams(self) -> None:
        """Renew, let go of the leases lost, claim the unowned and follow what we hold."""
        if not self._ownership.replicated:
            return
        held = await self._ownership.renew()
        for job_id in self._streams.job_ids():
            if job_id not in held:
                self._streams.abandon(job_id)
        for job_id in await self._ownership.unowned():
            if await self._ownership.claim(job_id):
                log.info("taking over stream job_id=%s owner=%s", job_id, self._ownership.owner)
                held.add(job_id)
        for job_id in sorted(held - set(self._streams.job_ids())):
            job = await self._store.get_job(job_id)
            if job.state in ACTIVE_STATES:
                await self._follower.resume(job)
