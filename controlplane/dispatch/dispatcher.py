"""The dispatcher: the loop that places queued jobs and keeps every followed job in hand.

One loop, woken on submit, agent registration and job completion, assigns queued jobs
(:mod:`.assignment`); once per tick it also takes over orphaned stream leases
(:mod:`.takeover`; a task of its own renews them), acts on lost agents, deadlines, drains
and pending cancels (:mod:`.supervision`) and queues again the retries whose backoff is
over. Each assignment is followed by its own task (:mod:`.following`). While the store
cannot be reached the loop waits; agents' leases then count from when it is back (like after
a restart).

With several replicas on one PostgreSQL store (:mod:`controlplane.ownership`) one replica
schedules and leases each new job's stream to the live replica with the fewest streams, each
job's stream is followed by the replica holding its lease (woken by the store's dispatch
feed when streams are granted to it; it wakes the scheduler when its jobs end), and a replica
takes over the streams whose owner died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from controlplane.dispatch.assignment import Assigner
from controlplane.dispatch.cancellation import AgentCancels
from controlplane.dispatch.context import DispatchContext
from controlplane.dispatch.following import StreamFollower
from controlplane.dispatch.policy import DispatchPolicy
from controlplane.dispatch.reconcile import AgentReconciler
from controlplane.dispatch.requeue import Requeuer
from controlplane.dispatch.streams import StreamTasks
from controlplane.dispatch.supervision import Supervisor
from controlplane.dispatch.takeover import StreamTakeover
from controlplane.events import EventHub
from controlplane.leases import Verdict
from controlplane.models import JobRecord
from controlplane.ownership import StreamOwnership
from controlplane.placement import SchedulePlan
from controlplane.progress import ProgressRecorder
from controlplane.retry import RetryPolicy
from controlplane.store import ACTIVE_STATES, JobStore
from controlplane.worker_client import WorkerClients
from protocol.errors import Unavailable

log = logging.getLogger(__name__)


class Dispatcher:
    """Assigns queued jobs and relays their progress; owns the channels to agents.

    Servicers see it through :mod:`controlplane.dispatch.handles` only.
    """

    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        policy: DispatchPolicy | None = None,
        clients: WorkerClients | None = None,
    ) -> None:
        self._store = store
        self._policy = policy = policy or DispatchPolicy()
        self._clients = clients = clients or WorkerClients()
        self._recorder = recorder = ProgressRecorder(
            store,
            hub,
            on_terminal=lambda _job_id: self._job_moved(),
            retry=RetryPolicy(backoff_base=policy.retry_backoff),
            on_retry=lambda _job_id: self.wake(),
        )
        ctx = DispatchContext(
            store=store,
            clients=clients,
            recorder=recorder,
            ownership=StreamOwnership(store, policy.stream_lease),
            policy=policy,
            streams=StreamTasks(),
            cancels=AgentCancels(store, clients, policy.cancel_resend),
            requeuer=Requeuer(store, recorder, policy.requeue_holdoff, self.wake),
        )
        self._ownership, self._streams, self._cancels = ctx.ownership, ctx.streams, ctx.cancels
        self._follower = follower = StreamFollower(ctx)
        self._assigner = Assigner(ctx, follower)
        self._supervisor = Supervisor(ctx)
        self._reconciler = AgentReconciler(ctx, follower)
        self._takeover = StreamTakeover(ctx, follower)
        self._wakeup = asyncio.Event()
        # What woke the loop: a pass was asked for, or streams were granted to this replica.
        self._pass_asked = False
        self._grants_heard = False
        self._slots_freed = False  # jobs followed here ended: the scheduler may place more
        self._listeners: list[Callable[[], None]] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._store_down = False

    # --- what the servicers may ask (controlplane.dispatch.handles) ----------------------

    def on_job_moved(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when a job ends or passes are placing jobs (the migration driver
        advances a migration then, instead of on its next tick)."""
        self._listeners.append(listener)

    def _job_moved(self) -> None:
        self._slots_freed = True
        self.wake()
        for listener in self._listeners:
            listener()

    def wake(self) -> None:
        """Ask for a scheduling pass soon (after a submit, registration or completion)."""
        self._pass_asked = True
        self._wakeup.set()

    def _granted(self) -> None:
        """Another replica granted streams to this one: start them soon."""
        self._grants_heard = True
        self._wakeup.set()

    async def cancel_unstarted(self, job: JobRecord, reason: str) -> JobRecord:
        """Record CANCELLED for a job no agent runs."""
        return await self._recorder.end_cancelled(job, reason)

    async def cancel_on_agent(self, job: JobRecord, reason: str) -> bool:
        """Ask the job's agent to cancel it; False when the agent could not be asked."""
        return await self._cancels.ask(job, reason)

    async def reconcile_agent(self, name: str, reported_job_ids: Sequence[str]) -> None:
        """Cancel the agent's orphans, follow its jobs that nobody follows."""
        await self._reconciler.reconcile_agent(name, reported_job_ids)

    async def leads_scheduling(self) -> bool:
        """Whether this replica holds the scheduler role (it also drives migrations)."""
        return await self._ownership.lead_scheduler()

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Re-attach to every job that was running, then start the scheduling loop."""
        self._supervisor.count_leases_from_now()
        page = await self._store.list_jobs(states=ACTIVE_STATES, limit=None)
        for job in page.jobs:
            # Another live replica may follow it: only what this replica can claim.
            if await self._ownership.claim(job.job_id):
                self._ownership.starting(job.job_id, job.attempt)  # only ever re-attached
                await self._follower.resume(job)
        self._ownership.watch_notices(self._granted, self.wake)
        self._loop_task = asyncio.create_task(self._run(), name="h2k-dispatcher")
        if self._ownership.replicated:
            self._lease_task = asyncio.create_task(self._renew_leases(), name="h2k-leases")

    async def stop(self) -> None:
        """Stop scheduling and let go of every stream (agents keep running their jobs)."""
        tasks = [*self._streams.tasks(), *self._cancels.tasks()]
        tasks += [t for t in (self._loop_task, self._lease_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._recorder.settle()
        with contextlib.suppress(Unavailable):
            await self._ownership.release()
        await self._clients.close()

    # --- the loop ------------------------------------------------------------------------

    async def assign_queued_jobs(self) -> SchedulePlan:
        """One scheduling pass (:mod:`.assignment`)."""
        plan = await self._assigner.assign_queued_jobs()
        if plan.assignments:
            for listener in self._listeners:
                listener()
        return plan

    async def supervise(self) -> list[Verdict]:
        """Act on lost agents, deadlines, drains and pending cancels (:mod:`.supervision`)."""
        return await self._supervisor.supervise()

    async def release_retries(self) -> int:
        """Queue again the RETRYING jobs whose backoff is over; returns how many."""
        released = await self._supervisor.release_retries()
        if released:
            self.wake()
        return released

    async def keep_streams(self) -> None:
        """Take over orphaned streams, follow the held ones (several replicas, :mod:`.takeover`)."""
        await self._takeover.keep_streams()

    async def renew_leases(self) -> None:
        """Renew this replica's stream leases (several replicas, :mod:`.takeover`)."""
        await self._takeover.renew_leases()

    async def _renew_leases(self) -> None:
        """Every tick, in a task of its own: a long pass in the loop cannot let leases lapse."""
        down = False
        while True:
            try:
                await self.renew_leases()
                down = False
            except Unavailable as exc:
                if not down:
                    log.warning("store unavailable: leases not renewed error=%s", exc.message)
                down = True
            except Exception:
                log.exception("renewing stream leases failed")
            await asyncio.sleep(self._policy.tick_seconds)  # the renewal period itself

    async def follow_granted(self) -> None:
        """Start the streams granted to this replica (several replicas, :mod:`.takeover`)."""
        await self._takeover.follow_granted()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_tick = -math.inf
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._policy.tick_seconds)
            self._wakeup.clear()
            # Wakes (a submit, a free slot) call for placement; leases, deadlines and
            # retries are a matter of time and are looked at once per tick, so a busy queue
            # does not re-read every active job per placement. Grants heard start streams
            # (keep_streams does that too, as a backstop for a grant not heard).
            grants_only = self._grants_heard and not self._pass_asked
            steps: tuple[Callable[[], Awaitable[Any]], ...] = (
                () if grants_only else (self.assign_queued_jobs,)
            )
            if self._grants_heard:
                steps = (self.follow_granted, *steps)
            if self._slots_freed:
                steps = (*steps, self._ownership.announce_slots_freed)
            self._pass_asked = self._grants_heard = self._slots_freed = False
            if loop.time() - last_tick >= self._policy.tick_seconds:
                last_tick = loop.time()
                steps = (self.keep_streams, self.supervise, self.release_retries, *steps)
            for step in steps:
                try:
                    await step()
                except Unavailable as exc:
                    if not self._store_down:
                        log.warning("store unavailable: dispatcher waits error=%s", exc.message)
                    self._store_down = True
                    break
                except Exception:
                    log.exception("dispatch step failed step=%s", step.__name__)
                if self._store_down:
                    # Heartbeats could not be stored meanwhile: count leases from now.
                    log.info("store reachable again: dispatcher resumes")
                    self._store_down = False
                    self._supervisor.count_leases_from_now()
