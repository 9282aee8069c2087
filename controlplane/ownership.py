"""Which control-plane replica follows which job, and which one schedules.

Several replicas share one PostgreSQL store. Two duties must have exactly one holder:

* **Following a running job's stream** (ExecuteJob, then AttachJob after a break). The
  replica that assigns a job takes a lease on its stream *before* the job becomes ASSIGNED,
  renews all its leases every dispatcher tick, and stops following a job the moment its own
  view of the lease runs out. When a replica dies its leases run out (database time) and
  another replica takes them over and re-attaches from the last stored seq.
* **Scheduling** (placing queued jobs, releasing retries): a leased role. We chose one
  scheduler at a time over every replica scheduling with ``FOR UPDATE SKIP LOCKED``: a job
  row lock guards one job, but what must hold across jobs is each agent's slot count
  (``max_concurrent_jobs``), which the pure scheduler computes from a consistent view of
  every queued job and agent. Replicas scheduling at once from their own views would
  over-fill agents. Exactly-once assignment does not depend on the role alone: the
  QUEUED -> ASSIGNED transition locks the job's row and re-checks its state, and the stream
  lease is taken first, so even two schedulers overlapping (a lease handed over while the
  old holder was mid-pass) cannot assign one job twice.

Lease times are the database's clock, never a replica's, so clock skew between replicas
does not matter for them. A replica's own view of a lease expires earlier than the database's
(a third of the lease earlier, counted from when the renewal was sent), so the old owner
stops before a new one can start.

With a single-replica store (SQLite) every claim succeeds and every check is true.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from controlplane.store import JobStore

log = logging.getLogger(__name__)

SCHEDULER_ROLE = "scheduler"
DEFAULT_STREAM_LEASE = timedelta(seconds=10)


def replica_id() -> str:
    """A name for this control-plane process, unique across restarts (host, pid, random)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class StreamOwnership:
    """This replica's leases: job streams it follows and the scheduler role."""

    def __init__(
        self, store: JobStore, lease: timedelta = DEFAULT_STREAM_LEASE, owner: str | None = None
    ) -> None:
        self._store = store
        self._lease = lease
        self.owner = owner or replica_id()
        # job_id -> time.monotonic() until which we may act on the job.
        self._held: dict[str, float] = {}
        self._leading_until = 0.0

    @property
    def replicated(self) -> bool:
        return self._store.replicated

    def _valid_until(self, sent_at: float) -> float:
        return sent_at + self._lease.total_seconds() * 2 / 3

    def holds(self, job_id: str) -> bool:
        """Whether this replica may act on the job's stream right now."""
        if not self.replicated:
            return True
        return self._held.get(job_id, 0.0) > time.monotonic()

    async def claim(self, job_id: str) -> bool:
        """Take (or keep) the job's stream lease; False when another replica holds it."""
        if not self.replicated:
            return True
        sent_at = time.monotonic()
        if not await self._store.claim_stream(job_id, self.owner, self._lease):
            return False
        self._held[job_id] = self._valid_until(sent_at)
        return True

    async def claim_many(self, job_ids: list[str]) -> list[str]:
        """:meth:`claim` for several jobs with one store call; returns the ones claimed."""
        if not self.replicated or not job_ids:
            return list(job_ids)
        sent_at = time.monotonic()
        claimed = await self._store.claim_streams(job_ids, self.owner, self._lease)
        until = self._valid_until(sent_at)
        self._held.update(dict.fromkeys(claimed, until))
        return claimed

    async def renew(self) -> set[str]:
        """Extend every lease this replica holds; returns the job ids it still holds.

        Raises:
            Unavailable: the store cannot be reached (the local view then runs out by
                itself, and this replica stops acting on those jobs).
        """
        if not self.replicated:
            return set()
        sent_at = time.monotonic()
        held = set(await self._store.renew_streams(self.owner, self._lease))
        until = self._valid_until(sent_at)
        # A claim made while the renewal was under way is newer than its answer: keep it.
        claimed_meanwhile = {j: t for j, t in self._held.items() if j not in held and t > until}
        self._held = {**dict.fromkeys(held, until), **claimed_meanwhile}
        return held | set(claimed_meanwhile)

    async def unowned(self) -> list[str]:
        """Active jobs nobody follows (their owner died or let go): candidates to take over."""
        if not self.replicated:
            return []
        return await self._store.unowned_active_jobs()

    async def lead_scheduler(self) -> bool:
        """Take or keep the scheduler role; True while this replica is the scheduler."""
        if not self.replicated:
            return True
        sent_at = time.monotonic()
        was_leading = self._leading_until > sent_at
        if await self._store.claim_role(SCHEDULER_ROLE, self.owner, self._lease):
            self._leading_until = self._valid_until(sent_at)
            if not was_leading:
                log.info("scheduler role taken owner=%s", self.owner)
            return True
        self._leading_until = 0.0
        return False

    async def release(self) -> None:
        """Give up every lease at once (graceful stop): other replicas take over now."""
        self._held.clear()
        self._leading_until = 0.0
        if self.replicated:
            await self._store.release_streams(self.owner)
