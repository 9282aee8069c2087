"""Which control-plane replica follows which job, and which one schedules.

Several replicas share one PostgreSQL store. Two duties must have exactly one holder:

* **Following a running job's stream** (ExecuteJob, then AttachJob after a break). The
  scheduler leases each job's stream to a live replica *before* the job becomes ASSIGNED
  (:meth:`StreamOwnership.grant_many`: the replica with the fewest streams, so relaying
  spreads over the replicas) and tells that replica through the store's dispatch feed; the
  replica confirms the lease (:meth:`~StreamOwnership.confirm_granted`) and starts the job.
  Each replica renews all its leases every tick, in a task of its own (a long scheduling
  pass does not delay it), and stops following a job the moment its own view of the lease
  runs out. When a replica dies its leases run out (database time) and another replica takes
  them over and re-attaches from the last stored seq. Each replica also renews a presence
  lease of its own (``announce``), by which the scheduler knows the live replicas.
* **Scheduling** (placing queued jobs, releasing retries): a leased role. We chose one
  scheduler at a time over every replica scheduling with ``FOR UPDATE SKIP LOCKED``: a job
  row lock guards one job, but what must hold across jobs is each agent's slot count
  (``max_concurrent_jobs``), which the pure scheduler computes from a consistent view of
  every queued job and agent. Replicas scheduling at once from their own views would
  over-fill agents. Exactly-once assignment does not depend on the role alone: the
  QUEUED -> ASSIGNED transition locks the job's row and re-checks its state, and the stream
  lease is taken first, so even two schedulers overlapping (a lease handed over while the
  old holder was mid-pass) cannot assign one job twice.

Exactly-once start: an attempt is started (ExecuteJob) only by the replica its stream was
granted to, while that replica holds the lease, and only once: each replica remembers the
attempts it started and the ones it took over from another owner (which may have started
them) and only re-attaches (AttachJob) to those. A restarted replica has a new owner name,
so it never holds the leases of its former self; it takes them over like any orphan.

Lease times are the database's clock, never a replica's, so clock skew between replicas
does not matter for them. A replica's own view of a lease expires earlier than the database's
(a third of the lease earlier, counted from when the renewal was sent), so the old owner
stops before a new one can start.

With a single-replica store (SQLite) every claim succeeds and every check is true.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from controlplane.store import JobStore

log = logging.getLogger(__name__)

SCHEDULER_ROLE = "scheduler"
DEFAULT_STREAM_LEASE = timedelta(seconds=10)
# How long a replica that found the scheduler role taken waits before it asks again.
FOLLOWER_RECHECK_SECONDS = 1.0


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
        # job_id -> time.monotonic() when the store last answered a claim or grant of it
        # (renewals run in a task of their own, beside claims and grants: see renew).
        self._answered: dict[str, float] = {}
        self._leading_until = 0.0
        self._not_leading_until = 0.0
        # Live replica -> how many streams it holds (see announce / choose_owners).
        self._loads: dict[str, int] = {}
        # Attempts this replica must never start: started here already, or taken over
        # from another owner (which may have started them). Kept for the jobs held.
        self._not_to_start: set[tuple[str, int]] = set()

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
        self._hold([job_id], self._valid_until(sent_at))
        return True

    def _hold(self, job_ids: list[str], until: float) -> None:
        answered = time.monotonic()
        for job_id in job_ids:
            self._held[job_id] = until
            self._answered[job_id] = answered

    async def claim_many(self, job_ids: list[str]) -> list[str]:
        """:meth:`claim` for several jobs with one store call; returns the ones claimed."""
        if not self.replicated or not job_ids:
            return list(job_ids)
        sent_at = time.monotonic()
        claimed = await self._store.claim_streams(job_ids, self.owner, self._lease)
        self._hold(claimed, self._valid_until(sent_at))
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
        # A claim or grant answered after the renewal was sent may have committed after it:
        # it is newer than the renewal's answer, keep it.
        claimed_meanwhile = {
            j: t
            for j, t in self._held.items()
            if j not in held and self._answered.get(j, -math.inf) > sent_at
        }
        self._held = {**dict.fromkeys(held, until), **claimed_meanwhile}
        self._answered = {j: a for j, a in self._answered.items() if j in self._held}
        self._not_to_start = {(j, a) for j, a in self._not_to_start if j in self._held}
        return held | set(claimed_meanwhile)

    def held(self) -> set[str]:
        """The job ids whose leases this replica holds now (its own view; no store call)."""
        now = time.monotonic()
        return {j for j, until in self._held.items() if until > now}

    async def announce(self) -> None:
        """Renew this replica's presence and read every live replica's stream count (the
        scheduler grants new streams by it until the next announcement)."""
        if not self.replicated:
            return
        await self._store.announce_replica(self.owner, self._lease)
        self._loads = await self._store.stream_loads()

    async def choose_owners(self, job_ids: list[str]) -> dict[str, str]:
        """A live replica for each job's stream: the fewest streams first, this one on ties
        (and this one alone while no other replica has announced itself).

        The counts are those read at the last :meth:`announce` (once per dispatcher tick),
        plus the streams granted since: a pass costs no store call for them.
        """
        if not self.replicated or not job_ids:
            return dict.fromkeys(job_ids, self.owner)
        loads = self._loads
        loads.setdefault(self.owner, len(self._held))
        # Ties go to this replica first, then by name (a stable spread).
        order = sorted(loads, key=lambda o: (o != self.owner, o))
        chosen = {}
        for job_id in job_ids:
            owner = min(order, key=lambda o: loads[o])
            loads[owner] += 1
            chosen[job_id] = owner
        return chosen

    async def grant_many(self, grants: dict[str, str]) -> list[str]:
        """Lease each job's stream to its chosen owner (one store call); returns the jobs
        granted. This replica holds its own grants from now on."""
        if not self.replicated or not grants:
            return list(grants)
        sent_at = time.monotonic()
        granted = await self._store.grant_streams(grants, self._lease)
        self._hold([j for j in granted if grants[j] == self.owner], self._valid_until(sent_at))
        return granted

    async def announce_grants(self, owners: set[str]) -> None:
        """Wake the other replicas that were granted streams (they confirm and start them)."""
        others = owners - {self.owner}
        if self.replicated and others:
            await self._store.notify_dispatchers(others)

    async def announce_slots_freed(self) -> None:
        """Wake the scheduler (another replica) after jobs followed here ended."""
        if self.replicated and not self.leading:
            await self._store.notify_dispatchers([SCHEDULER_ROLE])

    async def confirm_granted(self) -> list[str]:
        """Renew this replica's leases of ASSIGNED jobs; returns their job ids, now held."""
        if not self.replicated:
            return []
        sent_at = time.monotonic()
        confirmed = await self._store.renew_assigned_streams(self.owner, self._lease)
        self._hold(confirmed, self._valid_until(sent_at))
        return confirmed

    def watch_notices(self, on_granted: Callable[[], None], on_slots: Callable[[], None]) -> None:
        """Call ``on_granted()`` when another replica granted streams to this one, and
        ``on_slots()`` when slots were freed elsewhere (the scheduler places then)."""
        if not self.replicated:
            return

        def heard(name: str | None) -> None:
            # None: the feed (re)connected and may have missed notices.
            if name is None or name == self.owner:
                on_granted()
            if name is None or name == SCHEDULER_ROLE:
                on_slots()

        self._store.start_dispatch_feed(heard)

    def may_start(self, job_id: str, attempt: int) -> bool:
        """Whether this replica may start the attempt (it holds it, never started or adopted it)."""
        return self.holds(job_id) and (job_id, attempt) not in self._not_to_start

    def starting(self, job_id: str, attempt: int) -> None:
        """The attempt is being started here (or was taken over): never start it again."""
        if self.replicated:
            self._not_to_start.add((job_id, attempt))

    async def unowned(self) -> list[str]:
        """Active jobs nobody follows (their owner died or let go): candidates to take over."""
        if not self.replicated:
            return []
        return await self._store.unowned_active_jobs()

    @property
    def leading(self) -> bool:
        """Whether this replica held the scheduler role at its last check (no store call)."""
        return not self.replicated or self._leading_until > time.monotonic()

    async def lead_scheduler(self) -> bool:
        """Take or keep the scheduler role; True while this replica is the scheduler.

        While another replica holds it, the store is asked again only after a while
        (:data:`FOLLOWER_RECHECK_SECONDS`): a replica relaying many streams is woken often.
        """
        if not self.replicated:
            return True
        sent_at = time.monotonic()
        was_leading = self._leading_until > sent_at
        if not was_leading and sent_at < self._not_leading_until:
            return False
        if await self._store.claim_role(SCHEDULER_ROLE, self.owner, self._lease):
            self._leading_until = self._valid_until(sent_at)
            if not was_leading:
                log.info("scheduler role taken owner=%s", self.owner)
            return True
        self._leading_until = 0.0
        self._not_leading_until = sent_at + FOLLOWER_RECHECK_SECONDS
        return False

    async def release(self) -> None:
        """Give up every lease at once (graceful stop): other replicas take over now."""
        self._held.clear()
        self._answered.clear()
        self._not_to_start.clear()
        self._leading_until = 0.0
        if self.replicated:
            await self._store.release_streams(self.owner)
