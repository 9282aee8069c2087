"""The dispatcher: places queued jobs on agents and follows each job's event stream.

One loop, woken on submit, agent registration, job completion and a periodic tick, runs the
scheduler over the stored queue. Each assignment gets its own task that calls the agent's
``Worker.ExecuteJob`` and relays the events; a broken stream is resumed with ``AttachJob``
from the last stored seq, so neither an agent's hiccup nor a control-plane restart loses
events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc

from controlplane.events import EventHub
from controlplane.models import AgentRecord, JobRecord, error_result
from controlplane.progress import ProgressRecorder
from controlplane.scheduler import DEFAULT_LEASE, SchedulePlan, agent_view, schedule_queued_jobs
from controlplane.store import ACTIVE_STATES, JobStore
from controlplane.worker_client import WorkerClients
from protocol.conversion import spec_to_proto, utcnow
from protocol.errors import NotFound
from protocol.gen.h2k.v1 import services_pb2
from protocol.states import IllegalTransition, JobState

log = logging.getLogger(__name__)

AGENT_LOST = "AGENT_LOST"


@dataclass(frozen=True)
class DispatchPolicy:
    """Timings of the dispatcher; a later retry/lease policy extends this."""

    tick_seconds: float = 1.0
    lease: timedelta = DEFAULT_LEASE
    # Pauses before each AttachJob attempt after a stream broke (the first is immediate).
    reattach_delays: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0)
    # How long a job the agent did not accept stays out of scheduling.
    requeue_holdoff: timedelta = timedelta(seconds=2)


@dataclass
class _Stream:
    """What one job's stream task has seen."""

    job_id: str
    agent: str
    address: str
    received: int = 0


class Dispatcher:
    """Assigns queued jobs and relays their progress; owns the channels to agents."""

    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        policy: DispatchPolicy | None = None,
        clients: WorkerClients | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._policy = policy or DispatchPolicy()
        self._clients = clients or WorkerClients()
        self._recorder = ProgressRecorder(store, hub, on_terminal=lambda _job_id: self.wake())
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._holdoff: dict[str, datetime] = {}

    @property
    def recorder(self) -> ProgressRecorder:
        return self._recorder

    def wake(self) -> None:
        """Ask for a scheduling pass soon (after a submit, registration or completion)."""
        self._wakeup.set()

    async def start(self) -> None:
        """Re-attach to every job that was running, then start the scheduling loop."""
        page = await self._store.list_jobs(states=ACTIVE_STATES, limit=None)
        for job in page.jobs:
            await self._resume(job)
        self._loop_task = asyncio.create_task(self._run(), name="h2k-dispatcher")

    async def stop(self) -> None:
        """Stop scheduling and let go of every stream (agents keep running their jobs)."""
        tasks = list(self._streams.values())
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._clients.close()

    def abandon(self, job_id: str) -> None:
        """Stop following a job's stream (the control plane ended the job itself)."""
        task = self._streams.pop(job_id, None)
        if task is not None:
            task.cancel()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._policy.tick_seconds)
            self._wakeup.clear()
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("dispatch pass failed")

    # --- placement ----------------------------------------------------------------------

    async def dispatch_once(self) -> SchedulePlan:
        """One scheduling pass: store queue reasons and start every assignment."""
        queued = (await self._store.list_jobs(states=[JobState.QUEUED], limit=None)).jobs
        if not queued:
            return SchedulePlan()
        now = utcnow()
        self._holdoff = {j: until for j, until in self._holdoff.items() if until > now}
        agents = {a.name: a for a in await self._store.list_agents()}
        running = await self._store.count_running_jobs()
        views = [agent_view(a, running.get(a.name, 0)) for a in agents.values()]
        candidates = [j for j in queued if j.job_id not in self._holdoff]
        plan = schedule_queued_jobs(candidates, views, now, self._policy.lease)
        by_id = {j.job_id: j for j in queued}
        for job_id, reason in plan.waiting.items():
            if by_id[job_id].queue_reason != reason:
                await self._store.set_queue_reason(job_id, reason)
                log.info("job waits job_id=%s reason=%r", job_id, reason)
        for job_id, agent_name in plan.assignments:
            await self._assign(by_id[job_id], agents[agent_name])
        return plan

    async def _assign(self, job: JobRecord, agent: AgentRecord) -> None:
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
        log.info(
            "job assigned job_id=%s agent=%s attempt=%d", job.job_id, agent.name, record.attempt
        )
        stream = _Stream(job.job_id, agent.name, agent.address)
        self._spawn(stream, self._execute(record, stream))

    async def _resume(self, job: JobRecord) -> None:
        """Follow a job that was active when the control plane stopped."""
        try:
            agent = await self._store.get_agent(job.assigned_agent or "")
        except NotFound:
            await self._give_up(job.job_id, job.assigned_agent or "?", "is not registered")
            return
        log.info(
            "re-attaching job_id=%s agent=%s after_seq=%d", job.job_id, agent.name, job.last_seq
        )
        stream = _Stream(job.job_id, agent.name, agent.address)
        self._spawn(stream, self._reattach(stream))

    def _spawn(self, stream: _Stream, body: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await body
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following job failed job_id=%s", stream.job_id)

        task = asyncio.create_task(guarded(), name=f"h2k-job-{stream.job_id}")
        self._streams[stream.job_id] = task
        task.add_done_callback(lambda t: self._forget(stream.job_id, t))

    def _forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._streams.get(job_id) is task:
            del self._streams[job_id]

    # --- following a job ----------------------------------------------------------------

    async def _execute(self, job: JobRecord, stream: _Stream) -> None:
        """Start the job on its agent and relay its events until it is terminal."""
        request = services_pb2.ExecuteJobRequest(
            spec=spec_to_proto(job.spec), attempt=job.attempt, start_seq=job.last_seq + 1
        )
        failure = "ended its stream without a terminal event"
        try:
            call = self._clients.stub(stream.address).ExecuteJob(request)
            if await self._relay(call, stream):
                return
        except grpc.aio.AioRpcError as exc:
            failure = f"{exc.code().name}: {exc.details()}"
        if stream.received == 0:
            # Nothing ran: the job goes back to the queue without using up a retry.
            await self._requeue(
                stream.job_id, f"agent {stream.agent} did not accept the job ({failure})"
            )
            return
        log.warning(
            "job stream broke job_id=%s agent=%s error=%s", stream.job_id, stream.agent, failure
        )
        await self._reattach(stream)

    async def _reattach(self, stream: _Stream) -> None:
        """Resume a job's stream with AttachJob, with backoff; give up when the agent is gone."""
        why = "stayed unreachable"
        for delay in self._policy.reattach_delays:
            if delay:
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
            job = await self._store.get_job(stream.job_id)
            if job.state.is_terminal:
                return
            request = services_pb2.AttachJobRequest(job_id=job.job_id, after_seq=job.last_seq)
            try:
                call = self._clients.stub(stream.address).AttachJob(request)
                if await self._relay(call, stream):
                    return
            except grpc.aio.AioRpcError as exc:
                log.info(
                    "attach failed job_id=%s agent=%s code=%s details=%s",
                    stream.job_id,
                    stream.agent,
                    exc.code().name,
                    exc.details(),
                )
                if exc.code() is grpc.StatusCode.NOT_FOUND:
                    why = "does not know the job"
                    break
        await self._give_up(stream.job_id, stream.agent, why)

    async def _relay(self, call: Any, stream: _Stream) -> bool:
        """Record every event of a stream; True once the job is terminal."""
        async for event in call:
            if event.job_id != stream.job_id:
                log.warning("foreign event dropped job_id=%s got=%s", stream.job_id, event.job_id)
                continue
            stream.received += 1
            job = await self._recorder.record(event)
            if job.state.is_terminal:
                call.cancel()
                return True
        return False

    async def _requeue(self, job_id: str, reason: str) -> None:
        """Put an ASSIGNED job back in the queue; nothing ran, so its attempt is given back."""
        job = await self._store.get_job(job_id)
        try:
            await self._store.transition(
                job_id,
                JobState.QUEUED,
                reason,
                queue_reason=reason,
                assigned_agent=None,
                attempt=max(0, job.attempt - 1),
            )
        except IllegalTransition:
            return  # cancelled meanwhile
        self._holdoff[job_id] = utcnow() + self._policy.requeue_holdoff
        log.warning("job requeued job_id=%s reason=%r", job_id, reason)
        self.wake()

    async def _give_up(self, job_id: str, agent: str, why: str) -> None:
        """End a job whose agent cannot be reached (the later retry policy hooks in here)."""
        job = await self._store.get_job(job_id)
        if job.state.is_terminal:
            return
        if job.state is JobState.ASSIGNED:
            await self._requeue(job_id, f"agent {agent} {why} before the job started")
            return
        now = utcnow()
        if job.cancel_requested:
            state, code = JobState.CANCELLED, "CANCELLED"
            reason = "agent unreachable; cancelled without confirmation"
        else:
            state, code = JobState.FAILED, AGENT_LOST
            reason = (
                f"agent {agent} lost during {job.phase or 'start'} at {job.progress_percent:.0f}%"
            )
        try:
            job = await self._store.transition(
                job_id,
                state,
                reason,
                result=error_result(job.phase, code, reason),
                error=reason,
                finished_at=now,
            )
        except IllegalTransition:
            return
        log.warning("job given up job_id=%s agent=%s why=%r", job_id, agent, why)
        self._recorder.announce_terminal(job)

    # --- cancellation -------------------------------------------------------------------

    async def cancel_on_agent(self, job: JobRecord, reason: str) -> bool:
        """Ask the job's agent to cancel it; False when the agent cannot confirm.

        On True the CANCELLED state arrives later, as the agent's terminal event.
        """
        try:
            agent = await self._store.get_agent(job.assigned_agent or "")
            response = await self._clients.cancel(agent.address, job.job_id, reason)
        except NotFound:
            return False
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "agent cancel failed job_id=%s agent=%s code=%s",
                job.job_id,
                job.assigned_agent,
                exc.code().name,
            )
            return False
        return response.found
