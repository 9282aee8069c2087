"""The dispatcher: places queued jobs on agents and follows each job's event stream.

One loop, woken on submit, agent registration and job completion, runs a scheduling pass over
the stored queue (:mod:`controlplane.placement`); once per tick it also acts on agents that
missed their lease, attempts past their deadline and drains past theirs
(:mod:`controlplane.leases`), and queues again the retries whose backoff is over. Each
assignment gets its own task that calls the agent's ``Worker.ExecuteJob`` and relays the
events; a broken stream is resumed with ``AttachJob`` from the last stored seq, so neither an
agent's hiccup nor a control-plane restart loses or repeats an event. A stream is followed
until its attempt ends or the agent's lease runs out; an agent is never declared lost just
because a stream broke.

With several replicas on one PostgreSQL store (:mod:`controlplane.ownership`) one replica
schedules, each job's stream is followed by the replica holding its lease, and a replica
takes over the streams whose owner died. While the store cannot be reached the loop waits;
agents' leases then count from when it is back (like after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc

from controlplane.events import EventHub
from controlplane.leases import (
    DEFAULT_TIMEOUT_MARGIN,
    Action,
    LeasePolicy,
    Verdict,
    review_active_jobs,
)
from controlplane.metrics import observe_scheduling
from controlplane.models import AgentRecord, JobRecord, QueuedJob
from controlplane.ownership import DEFAULT_STREAM_LEASE, StreamOwnership
from controlplane.placement import QueueReader
from controlplane.progress import EventGap, ProgressRecorder
from controlplane.retry import AGENT_LOST, TIMEOUT, RetryPolicy, next_attempt_at
from controlplane.scheduler import DEFAULT_LEASE, SchedulePlan
from controlplane.store import ACTIVE_STATES, JobStore
from controlplane.stream_batches import StreamBatches
from controlplane.worker_client import WorkerClients
from protocol.conversion import spec_to_proto, utcnow
from protocol.errors import NotFound, Unavailable
from protocol.gen.h2k.v1 import services_pb2
from protocol.states import IllegalTransition, JobState
from protocol.telemetry import context_from_traceparent, tracer

log = logging.getLogger(__name__)
_TRACER = tracer(__name__)

__all__ = ["AGENT_LOST", "DispatchPolicy", "Dispatcher"]

FOLLOWED_STATES = frozenset({JobState.RUNNING, JobState.PROGRESSING})
# ExecuteJob answers that mean the agent did not take the job (anything else: it may have).
REFUSALS = frozenset(
    {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


@dataclass(frozen=True)
class DispatchPolicy:
    """Timings of the dispatcher, leases, deadlines and retries."""

    tick_seconds: float = 1.0
    lease: timedelta = DEFAULT_LEASE
    # Pauses before each AttachJob attempt after a stream broke (the first is immediate);
    # the last one repeats until the stream is back or the agent's lease runs out.
    reattach_delays: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0)
    # How long a job the agent did not accept stays out of scheduling.
    requeue_holdoff: timedelta = timedelta(seconds=2)
    timeout_margin: timedelta = DEFAULT_TIMEOUT_MARGIN
    timeout_scale: float = 1.0
    retry_backoff: timedelta = timedelta(seconds=5)
    # How often an unconfirmed cancel is sent again.
    cancel_resend: timedelta = timedelta(seconds=5)
    # Several replicas: how long a stream (or the scheduler role) stays with a replica
    # that stopped renewing it (database time).
    stream_lease: timedelta = DEFAULT_STREAM_LEASE

    def leases(self) -> LeasePolicy:
        return LeasePolicy(self.lease, self.timeout_margin, self.timeout_scale)


def _queued_seconds(job: JobRecord) -> float:
    """How long a just assigned job waited since it last entered the queue."""
    queued = [t.time for t in job.history if t.to_state is JobState.QUEUED]
    since = max(queued, default=job.submitted_at)
    return max(0.0, (job.updated_at - since).total_seconds())


async def _end_call(call: Any) -> None:
    """Cancel a stream we are done with and let its iterator finish.

    A bare cancel() leaves the response iterator suspended, and the tracing interceptor ends
    the call's span only when that iterator finishes: reading once more ends it.
    """
    call.cancel()
    try:
        async for _event in call:
            pass
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our own task is being cancelled, not just the call
    except grpc.aio.AioRpcError:
        pass


def _span_attributes(job: JobRecord, agent: str) -> dict[str, str | int]:
    return {
        "h2k.job_id": job.job_id,
        "h2k.operation": job.spec.operation.value,
        "h2k.agent": agent,
        "h2k.attempt": job.attempt,
    }


@dataclass
class _Stream:
    """What one job's stream task follows and has seen."""

    job_id: str
    agent: str
    address: str
    attempt: int
    received: int = 0
    cancel_sent: bool = False


@dataclass
class _Background:
    """Fire-and-forget tasks (cancels to agents), kept referenced until they finish."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, body: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(body, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


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
        self._recorder = ProgressRecorder(
            store,
            hub,
            on_terminal=lambda _job_id: self.wake(),
            retry=RetryPolicy(backoff_base=self._policy.retry_backoff),
            on_retry=lambda _job_id: self.wake(),
        )
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._holdoff: dict[str, datetime] = {}
        self._cancel_sent: dict[str, datetime] = {}
        self._background = _Background()
        self._started_at = utcnow()
        self._ownership = StreamOwnership(store, self._policy.stream_lease)
        self._store_down = False
        self._queue = QueueReader(store, self._policy.lease)

    @property
    def recorder(self) -> ProgressRecorder:
        return self._recorder

    @property
    def ownership(self) -> StreamOwnership:
        return self._ownership

    def wake(self) -> None:
        """Ask for a scheduling pass soon (after a submit, registration or completion)."""
        self._wakeup.set()

    async def start(self) -> None:
        """Re-attach to every job that was running, then start the scheduling loop."""
        self._started_at = utcnow()
        page = await self._store.list_jobs(states=ACTIVE_STATES, limit=None)
        for job in page.jobs:
            # Another live replica may follow it: only what this replica can claim.
            if await self._ownership.claim(job.job_id):
                await self._resume(job)
        self._loop_task = asyncio.create_task(self._run(), name="h2k-dispatcher")

    async def stop(self) -> None:
        """Stop scheduling and let go of every stream (agents keep running their jobs)."""
        tasks = [*self._streams.values(), *self._background.tasks]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._recorder.settle()
        with contextlib.suppress(Unavailable):
            await self._ownership.release()
        await self._clients.close()

    def abandon(self, job_id: str) -> None:
        """Stop following a job's stream (the control plane ended the attempt itself)."""
        task = self._streams.pop(job_id, None)
        if task is not None:
            task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_tick = -math.inf
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._policy.tick_seconds)
            self._wakeup.clear()
            # Wakes (a submit, a free slot) call for placement; leases, deadlines and
            # retries are a matter of time and are looked at once per tick, so a busy queue
            # does not re-read every active job per placement.
            steps: tuple[Callable[[], Awaitable[Any]], ...] = (self.dispatch_once,)
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
                    self._started_at = utcnow()

    # --- placement ----------------------------------------------------------------------

    async def dispatch_once(self) -> SchedulePlan:
        """One scheduling pass (:mod:`controlplane.placement`): start what fits now, then
        store why the rest waits."""
        if not await self._ownership.lead_scheduler():
            return SchedulePlan()  # another replica schedules
        now = utcnow()
        self._holdoff = {j: until for j, until in self._holdoff.items() if until > now}
        held_back = tuple(self._holdoff)
        planned = await self._queue.plan(held_back, now)
        assigning = asyncio.gather(*(self._assign(job, agent) for job, agent in planned.placed))
        if not planned.reasons:
            await assigning
            return SchedulePlan(
                assignments=[(job.job_id, agent.name) for job, agent in planned.placed]
            )
        # Concurrently: the store commits the writes together (group commit).
        _done, changed = await asyncio.gather(
            assigning, self._store.set_queue_reasons(planned.reasons, keep=held_back)
        )
        if changed:
            for kind, reason in planned.reasons.items():
                log.info("jobs wait kind=%r reason=%r", kind, reason)
        return SchedulePlan(
            assignments=[(job.job_id, agent.name) for job, agent in planned.placed],
            waiting=dict(planned.reasons),
        )

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
            attributes={**_span_attributes(record, agent.name), "h2k.queued_seconds": waited},
        ):
            log.info(
                "job assigned job_id=%s agent=%s attempt=%d",
                job.job_id,
                agent.name,
                record.attempt,
            )
            stream = _Stream(job.job_id, agent.name, agent.address, record.attempt)
            # The task copies the current context: its spans are children of this one.
            self._spawn(stream, self._dispatch(record, stream))

    async def _dispatch(self, job: JobRecord, stream: _Stream) -> None:
        """Run the job on its agent inside the dispatch span (the ExecuteJob call's parent)."""
        with _TRACER.start_as_current_span(
            "controlplane.dispatch", attributes=_span_attributes(job, stream.agent)
        ):
            await self._execute(job, stream)

    async def _resume(self, job: JobRecord) -> None:
        """Follow a job that was active when the control plane stopped."""
        try:
            agent = await self._store.get_agent(job.assigned_agent or "")
        except NotFound:
            # The supervisor ends it: an unregistered agent counts as lost.
            return
        log.info(
            "re-attaching job_id=%s agent=%s after_seq=%d", job.job_id, agent.name, job.last_seq
        )
        stream = _Stream(job.job_id, agent.name, agent.address, job.attempt)
        self._spawn(stream, self._reattach(stream))

    def _spawn(self, stream: _Stream, body: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await body
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:
                # Followed again once the store is back (keep_streams, or the next heartbeat).
                log.warning("following job paused job_id=%s error=%s", stream.job_id, exc.message)
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
        """Start the job on its agent and relay its events until the attempt ends."""
        if (await self._store.get_job(job.job_id)).cancel_requested:
            await self._requeue(stream, "cancelled before it started")
            return
        request = services_pb2.ExecuteJobRequest(
            spec=spec_to_proto(job.spec), attempt=job.attempt, start_seq=job.last_seq + 1
        )
        failure, refused = "ended its stream without a terminal event", False
        try:
            call = self._clients.stub(stream.address).ExecuteJob(request)
            if await self._relay(call, stream):
                return
        except grpc.aio.AioRpcError as exc:
            failure, refused = f"{exc.code().name}: {exc.details()}", exc.code() in REFUSALS
            if exc.code() is grpc.StatusCode.ALREADY_EXISTS:
                # An earlier attempt still runs there (the agent was thought lost): end it.
                self._send_cancel(stream, "a newer attempt of this job was dispatched")
        if stream.received == 0 and refused:
            # Nothing ran: the job goes back to the queue without using up a retry.
            await self._requeue(stream, f"agent {stream.agent} did not accept the job ({failure})")
            return
        # Otherwise the agent may have started the job before the stream broke: ask it.
        log.warning(
            "job stream broke job_id=%s agent=%s error=%s", stream.job_id, stream.agent, failure
        )
        await self._reattach(stream)

    async def _reattach(self, stream: _Stream) -> None:
        """Resume a job's stream with AttachJob until its attempt ends.

        Retries with backoff for as long as the job is this stream's attempt; the supervisor
        ends the attempt (and this task) when the agent's lease runs out.
        """
        delays = list(self._policy.reattach_delays) or [1.0]
        for tries in itertools.count():
            delay = delays[min(tries, len(delays) - 1)]
            if delay:
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
            job = await self._store.get_job(stream.job_id)
            if not self._still_following(job, stream):
                return
            if job.state is JobState.ASSIGNED and tries >= len(delays):
                # Never heard of it starting: requeue (should it run there after all, the
                # agent reports it with its heartbeats and is told to cancel it).
                reason = f"agent {stream.agent} unreachable before the job started"
                await self._requeue(stream, reason)
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
                    await self._unknown_on_agent(stream, job)
                    return

    def _still_following(self, job: JobRecord, stream: _Stream) -> bool:
        return (
            job.state in ACTIVE_STATES
            and job.attempt == stream.attempt
            and job.assigned_agent == stream.agent
        )

    async def _unknown_on_agent(self, stream: _Stream, job: JobRecord) -> None:
        """The agent does not know the job: it never started, or the agent lost its log."""
        if job.state is JobState.ASSIGNED:
            await self._requeue(stream, f"agent {stream.agent} never started the job")
            return
        where = f"{job.phase or 'start'} at {job.progress_percent:.0f}%"
        await self._recorder.end_attempt(
            job.job_id,
            stream.attempt,
            code=AGENT_LOST,
            message=f"agent {stream.agent} lost during {where} (it no longer knows the job)",
            agent=stream.agent,
        )

    async def _relay(self, call: Any, stream: _Stream) -> bool:
        """Record every event of a stream; True once this attempt is over.

        A reader task takes events off the stream while they are being stored, and each
        store write records everything that arrived since the previous one.
        """
        try:
            async with StreamBatches(call) as batches:
                async for batch in batches:
                    if await self._record_batch(batch, stream):
                        break
                else:
                    return False
        except EventGap as gap:
            # Nothing past the gap was stored; AttachJob from last_seq fills it in.
            log.warning("event gap job_id=%s detail=%s", stream.job_id, gap)
            await _end_call(call)
            return False
        # Ended only now: the reader (stopped when the block was left) no longer reads it.
        await _end_call(call)
        return True

    async def _record_batch(self, batch: list[Any], stream: _Stream) -> bool:
        """Record events that arrived on a stream; True when the stream is to end."""
        if not self._ownership.holds(stream.job_id):
            # Our lease ran out (store unreachable): another replica may follow now.
            log.warning("stream lease lost job_id=%s: letting go", stream.job_id)
            return True
        events = [event for event in batch if event.job_id == stream.job_id]
        for event in batch:
            if event.job_id != stream.job_id:
                log.warning("foreign event job_id=%s got=%s", stream.job_id, event.job_id)
        if not events:
            return False
        stream.received += len(events)
        job = await self._recorder.record_batch(events)
        if not self._still_following(job, stream):
            return True
        if job.cancel_requested and not stream.cancel_sent:
            self._send_cancel(stream, "cancel requested")
        return False

    async def _requeue(self, stream: _Stream, reason: str) -> None:
        """Put an ASSIGNED job back in the queue; nothing ran, so its attempt is given back.

        A job whose cancel was asked for ends CANCELLED instead.
        """
        async with self._recorder.locked(stream.job_id):
            job = await self._store.get_job(stream.job_id)
            if job.state is not JobState.ASSIGNED or job.attempt != stream.attempt:
                return
            if job.cancel_requested:
                await self._recorder.end_cancelled(job, f"cancelled before it started ({reason})")
                return
            await self._store.transition(
                job.job_id,
                JobState.QUEUED,
                reason,
                queue_reason=reason,
                assigned_agent=None,
                attempt=max(0, job.attempt - 1),
            )
        self._holdoff[job.job_id] = utcnow() + self._policy.requeue_holdoff
        log.warning("job requeued job_id=%s reason=%r", job.job_id, reason)
        self.wake()

    # --- leases, deadlines, drains and retries ------------------------------------------

    async def supervise(self) -> list[Verdict]:
        """Act on lost agents, attempts past their deadline, drains and pending cancels."""
        active = (await self._store.list_jobs(states=ACTIVE_STATES, limit=None)).jobs
        # Each replica looks after the jobs whose streams it holds.
        active = [j for j in active if self._ownership.holds(j.job_id)]
        if not active:
            self._cancel_sent.clear()
            return []
        agents = await self._store.list_agents()
        now = utcnow()
        verdicts = review_active_jobs(active, agents, now, self._policy.leases(), self._started_at)
        addresses = {a.name: a.address for a in agents}
        for verdict in verdicts:
            stream = _Stream(
                verdict.job_id, verdict.agent, addresses.get(verdict.agent, ""), verdict.attempt
            )
            if verdict.action is Action.AGENT_LOST:
                await self._end_on_our_own(stream, AGENT_LOST, verdict.message)
            elif verdict.action is Action.TIMEOUT:
                self._send_cancel(stream, verdict.message)
                await self._end_on_our_own(stream, TIMEOUT, verdict.message)
            elif self._cancel_due(verdict.job_id, now):
                self._send_cancel(stream, verdict.message)
        return verdicts

    async def _end_on_our_own(self, stream: _Stream, code: str, message: str) -> None:
        log.warning(
            "ending attempt job_id=%s agent=%s code=%s reason=%r",
            stream.job_id,
            stream.agent,
            code,
            message,
        )
        self.abandon(stream.job_id)
        job = await self._store.get_job(stream.job_id)
        if job.state is JobState.ASSIGNED:
            await self._requeue(stream, message)
            return
        await self._recorder.end_attempt(
            stream.job_id, stream.attempt, code=code, message=message, agent=stream.agent
        )

    def _cancel_due(self, job_id: str, now: datetime) -> bool:
        last = self._cancel_sent.get(job_id)
        if last is not None and now - last < self._policy.cancel_resend:
            return False
        self._cancel_sent[job_id] = now
        return True

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
        if released:
            self.wake()
        return released

    # --- agents coming and going --------------------------------------------------------

    async def reconcile_agent(self, name: str, reported_job_ids: Sequence[str]) -> None:
        """Match the jobs an agent says it runs with the jobs assigned to it.

        Jobs it runs that are not (any more) assigned to it are cancelled there; running
        jobs assigned to it that nobody follows are re-attached.
        """
        assigned = (await self._store.running_jobs_by_agent()).get(name, [])
        try:
            address = (await self._store.get_agent(name)).address
        except NotFound:
            return
        for job_id in reported_job_ids:
            if job_id not in assigned:
                log.warning("orphan job on agent job_id=%s agent=%s", job_id, name)
                stream = _Stream(job_id, name, address, 0)
                self._send_cancel(stream, f"the job is not assigned to agent {name} any more")
        for job_id in assigned:
            if job_id in self._streams:
                continue
            job = await self._store.get_job(job_id)
            if job.state in FOLLOWED_STATES and await self._ownership.claim(job_id):
                log.info("following unfollowed job job_id=%s agent=%s", job_id, name)
                stream = _Stream(job_id, name, address, job.attempt)
                self._spawn(stream, self._reattach(stream))

    # --- several replicas ---------------------------------------------------------------

    async def keep_streams(self) -> None:
        """Renew this replica's stream leases, let go of lost ones, take over orphans.

        A job we hold but no longer follow (its task ended while the store was unreachable)
        is followed again; a job whose owner died is claimed and re-attached from the last
        stored seq. A no-op with a single-replica store.
        """
        if not self._ownership.replicated:
            return
        held = await self._ownership.renew()
        for job_id in list(self._streams):
            if job_id not in held:
                self.abandon(job_id)
        for job_id in await self._ownership.unowned():
            if await self._ownership.claim(job_id):
                log.info("taking over stream job_id=%s owner=%s", job_id, self._ownership.owner)
                held.add(job_id)
        for job_id in sorted(held - set(self._streams)):
            job = await self._store.get_job(job_id)
            if job.state in ACTIVE_STATES:
                await self._resume(job)

    # --- cancellation -------------------------------------------------------------------

    def _send_cancel(self, stream: _Stream, reason: str) -> None:
        """Ask the agent to cancel the job, in the background (the answer comes as events)."""
        if not stream.address:
            return
        stream.cancel_sent = True

        async def send() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._clients.cancel(stream.address, stream.job_id, reason)
                log.info("cancel sent job_id=%s agent=%s", stream.job_id, stream.agent)

        self._background.spawn(send(), name=f"h2k-cancel-{stream.job_id}")

    async def cancel_on_agent(self, job: JobRecord, reason: str) -> bool:
        """Ask the job's agent to cancel it; False when the agent could not be asked.

        Either way the CANCELLED state arrives later: as the agent's terminal event once it
        cleaned up, or when its lease runs out. An unconfirmed cancel is sent again.
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
        self._cancel_sent[job.job_id] = utcnow()
        return response.found
