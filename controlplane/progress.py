"""Recording what an agent reports: store the event, move the job's state, fan it out.

Events of one job are applied in order under a lock per job, and a batch is applied in full
even when the task relaying it is cancelled, so a job's stored events are always seq 1..N
without a gap or a duplicate, and ``last_seq`` is the last applied one. A run of plain progress
events (no state change) is stored with one store write, shared with the runs of every other
job that arrived meanwhile (:meth:`JobStore.record_progress`); an event that changes the job's
state is applied on its own, after the run before it.

An attempt that ends without completing goes through :mod:`controlplane.retry`: the job is
retried, requeued, cancelled or failed. When the control plane itself ends an attempt (agent
lost, deadline passed) it records an event of its own, so watchers see why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from controlplane.events import EventHub
from controlplane.models import JobRecord, error_result, result_to_dict
from controlplane.retry import Decision, Outcome, RetryPolicy, decide
from controlplane.store import ACTIVE_STATES, JobMark, JobStatus, JobStore, ProgressWrite
from protocol.conversion import event_state, timestamp_from_proto, timestamp_to_proto, utcnow
from protocol.errors import ErrorCode, NotFound
from protocol.gen.h2k.v1 import job_pb2
from protocol.states import IllegalTransition, JobState, is_allowed

log = logging.getLogger(__name__)

T = TypeVar("T")

REPORTED_BY_CONTROL_PLANE = "control-plane"


# How many times a batch is applied again after its job moved under a write (another replica).
_STALE_TRIES = 3


class _Stale(Exception):
    """A run's write was refused: the job is no longer where the recorder's record said."""


class EventGap(Exception):
    """An event arrived whose seq is beyond the next expected one; resume from the store."""

    def __init__(self, job_id: str, expected: int, got: int) -> None:
        super().__init__(f"job {job_id}: expected seq {expected}, got {got}")
        self.job_id = job_id
        self.expected = expected
        self.got = got


class ProgressWrites:
    """The progress runs of all jobs, written together: each store call takes every run that
    arrived while the previous one was on its way (one transaction, one commit, one hop to
    the store for a wave's thousand relays instead of one each)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._pending: list[tuple[ProgressWrite, asyncio.Future[JobStatus | None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def write(self, write: ProgressWrite) -> JobStatus | None:
        """Store one job's run with the others waiting; its status after the commit, or None
        when the store has no such job."""
        future: asyncio.Future[JobStatus | None] = asyncio.get_running_loop().create_future()
        self._pending.append((write, future))
        if self._writing is None:
            self._writing = asyncio.ensure_future(self._write_pending())
        return await future

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write_batch(batch)
        finally:
            self._writing = None
            for _write, future in self._pending:  # only when this task was cancelled
                if not future.done():
                    future.cancel()

    async def _write_batch(
        self, batch: list[tuple[ProgressWrite, asyncio.Future[JobStatus | None]]]
    ) -> None:
        try:
            found = await self._store.record_progress([write for write, _future in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            # One write's fault fails only its caller: write each alone.
            for one in batch:
                await self._write_batch([one])
            return
        except BaseException:
            for _write, future in batch:
                future.cancel()
            raise
        for write, future in batch:
            _settle(future, found.get(write.job_id))


def _settle(future: asyncio.Future[T], outcome: T | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@dataclass
class _JobLock:
    """A job's lock and how many tasks hold or wait for it (dropped when none does)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class ProgressRecorder:
    """Applies agents' progress events to the store, then publishes them to watchers."""

    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        on_terminal: Callable[[str], None] | None = None,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._on_terminal = on_terminal
        self._on_retry = on_retry
        self._retry = retry or RetryPolicy()
        self._locks: dict[str, _JobLock] = {}
        self._inflight: set[asyncio.Future[Any]] = set()
        # The record each active job's last write under its lock returned, so the next
        # batch need not read the job first; dropped whenever anyone else takes the job's
        # lock (they may change the job). With several replicas another one may move the job
        # meanwhile: each run's write is stored only if the job is still where this record
        # says (else the job is read and the batch applied again), and a state change
        # starts from the job as stored.
        self._known: dict[str, JobRecord] = {}
        self._shared = store.replicated
        self._writes = ProgressWrites(store)

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    def remember(self, job: JobRecord) -> None:
        """The job as a write just committed it (an assignment): its first batch starts from
        this record instead of reading the job."""
        if job.state in ACTIVE_STATES and job.job_id not in self._locks:
            self._known[job.job_id] = job

    @asynccontextmanager
    async def locked(self, job_id: str) -> AsyncIterator[None]:
        """Hold the job's lock: no event of it is applied meanwhile."""
        async with self._job_lock(job_id):
            # The holder may change the job: the next batch reads it again.
            self._known.pop(job_id, None)
            yield

    @asynccontextmanager
    async def _job_lock(self, job_id: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(job_id, _JobLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[job_id]

    async def record(self, event: job_pb2.ProgressEvent) -> JobRecord:
        """Store one event and apply it; returns the job as it is afterwards.

        See :meth:`record_batch`.
        """
        return await self.record_batch([event])

    async def record_batch(self, events: Sequence[job_pb2.ProgressEvent]) -> JobRecord:
        """Store events of one job and apply them in seq order; returns the job afterwards.

        Events at or below the job's last_seq were applied already and are skipped (an
        AttachJob replay repeats them), as are events of another attempt or agent and events
        for a job that is already terminal. Once an event leaves the job outside the active
        states (ended, retrying), the rest of the batch is left alone: that attempt is over.
        Each event is published to watchers after it is committed. The work is shielded:
        cancelling the caller does not leave a batch half applied.

        Raises:
            EventGap: an event's seq is beyond the next one expected (the events before it
                are stored and applied, nothing from it on).
        """
        if not events:
            raise ValueError("record_batch needs at least one event")
        return await self._shielded(self._record_locked(events))

    async def _record_locked(self, events: Sequence[job_pb2.ProgressEvent]) -> JobRecord:
        job_id = events[0].job_id
        async with self._job_lock(job_id):
            # At most one read per batch: under the lock nothing but cancel_requested changes
            # the job behind our back (or, with several replicas, another replica: then a
            # run's write is refused and the batch is applied again from the stored job);
            # every write below returns the job as it is afterwards, and the last batch's
            # answer stands in for the read when it is known.
            job = self._known.pop(job_id, None) or await self._store.get_job(job_id)
            for _tries in range(_STALE_TRIES):
                try:
                    job = await self._apply_batch(job, events)
                    break
                except _Stale:
                    job = await self._store.get_job(job_id)
            else:
                job = await self._apply_batch(job, events, stale_ok=False)
            if job.state in ACTIVE_STATES:
                self._known[job_id] = job
            return job

    async def _apply_batch(
        self, job: JobRecord, events: Sequence[job_pb2.ProgressEvent], stale_ok: bool = True
    ) -> JobRecord:
        run: list[job_pb2.ProgressEvent] = []
        for event in events:
            if self._shared and _changes_state(job, event):
                # Another replica may have moved the job: a state change starts from the job
                # as stored (what came before it is stored first).
                await self._store_run(job, run, stale_ok)
                run = []
                job = await self._store.get_job(job.job_id)
            expected = (run[-1].seq if run else job.last_seq) + 1
            if job.state.is_terminal or event.seq < expected or _foreign(job, event):
                continue
            if event.seq != expected:
                await self._store_run(job, run, stale_ok)  # what came before the gap is kept
                raise EventGap(job.job_id, expected, event.seq)
            if _changes_state(job, event):
                job = await self._store_run(job, run, stale_ok)
                run = []
                job = await self._apply(job, event)
            else:
                run.append(event)
            if job.state not in ACTIVE_STATES:
                break
        return await self._store_run(job, run, stale_ok)

    async def _store_run(
        self, job: JobRecord, run: Sequence[job_pb2.ProgressEvent], stale_ok: bool = True
    ) -> JobRecord:
        """Store a run of events that change no state, then publish them.

        The run shares one store write with the runs of every other job that arrived
        meanwhile (:class:`ProgressWrites`), and the job is not read back: the write answers
        with its state, attempt, agent and cancel flag, the rest is what this run set. The
        write is stored only if the job is still at ``job``'s last_seq, attempt and state.

        Raises:
            _Stale: the job moved meanwhile (another replica); nothing of the run is stored.
        """
        if not run:
            return job
        phase = job.phase
        for event in run:
            phase = event.phase or phase
        write = ProgressWrite(
            job.job_id,
            run,
            run[-1].seq,
            phase,
            run[-1].progress_percent,
            follows=JobMark(job.last_seq, job.attempt, job.state),
        )
        status = await self._writes.write(write)
        if status is None:
            raise NotFound(f"job {job.job_id} not found")
        if not status.written:
            if stale_ok:
                raise _Stale(job.job_id)
            raise RuntimeError(f"job {job.job_id} kept moving under its progress writes")
        self._hub.publish_batch(run)
        if (status.state, status.attempt, status.assigned_agent) != (
            job.state,
            job.attempt,
            job.assigned_agent,
        ):
            # Moved by someone not holding the job's lock: its record, as stored.
            return await self._store.get_job(job.job_id)
        return replace(
            job,
            last_seq=write.last_seq,
            phase=write.phase,
            progress_percent=write.progress_percent,
            cancel_requested=status.cancel_requested,
            updated_at=status.updated_at,
        )

    async def end_attempt(
        self, job_id: str, attempt: int, *, code: str, message: str, agent: str
    ) -> JobRecord | None:
        """End a RUNNING or PROGRESSING attempt on the control plane's own authority.

        Records a FAILED event for the attempt (seq last_seq + 1) and applies it like an
        agent's. Returns None when the job moved on meanwhile (another attempt, terminal).
        """
        return await self._shielded(self._end_attempt(job_id, attempt, code, message, agent))

    async def _shielded(self, work: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def settle(self) -> None:
        """Wait for every event being applied (on stop, before the store closes)."""
        await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _end_attempt(
        self, job_id: str, attempt: int, code: str, message: str, agent: str
    ) -> JobRecord | None:
        async with self.locked(job_id):
            job = await self._store.get_job(job_id)
            if job.attempt != attempt or job.state not in (
                JobState.RUNNING,
                JobState.PROGRESSING,
            ):
                return None
            error = job_pb2.JobError(phase=job.phase, code=code, message=message)
            event = job_pb2.ProgressEvent(
                job_id=job_id,
                seq=job.last_seq + 1,
                time=timestamp_to_proto(utcnow()),
                phase=job.phase,
                progress_percent=job.progress_percent,
                message=message,
                details={"reported_by": REPORTED_BY_CONTROL_PLANE},
                state=job_pb2.JOB_STATE_FAILED,
                result=job_pb2.JobResult(error=error),
                attempt=attempt,
                agent=agent,
            )
            log.warning("attempt ended job_id=%s attempt=%d code=%s", job_id, attempt, code)
            return await self._apply(job, event)

    async def _apply(self, job: JobRecord, event: job_pb2.ProgressEvent) -> JobRecord:
        """Store one event that is next for ``job`` (checked by the caller) and apply it."""
        # The event is stored with the job's move, in one transaction (a duplicate insert is
        # skipped: the event may be stored from before a crash, its state not yet applied).
        job = await self._advance(job, event)
        self._hub.publish(event)
        if job.state.is_terminal:
            self.announce_terminal(job)
        elif job.state is JobState.RETRYING and self._on_retry is not None:
            self._on_retry(job.job_id)
        return job

    async def end_cancelled(self, job: JobRecord, reason: str) -> JobRecord:
        """Record CANCELLED without the agent (nothing runs, or the agent is gone).

        Returns the job as it is afterwards (as it ended, when it ended on its own meanwhile).
        """
        try:
            job = await self._store.transition(
                job.job_id,
                JobState.CANCELLED,
                reason,
                result=error_result(job.phase, ErrorCode.CANCELLED, reason),
                error=reason,
                finished_at=utcnow(),
            )
        except IllegalTransition:
            # It ended on its own between the caller's read and this write.
            return await self._store.get_job(job.job_id)
        self.announce_terminal(job)
        return job

    def announce_terminal(self, job: JobRecord) -> None:
        """Tell watchers and the dispatcher that a job ended (after the store recorded it)."""
        log.info(
            "job finished job_id=%s state=%s agent=%s attempt=%d",
            job.job_id,
            job.state,
            job.assigned_agent,
            job.attempt,
        )
        self._hub.notify_terminal(job.job_id)
        if self._on_terminal is not None:
            self._on_terminal(job.job_id)

    async def _advance(self, job: JobRecord, event: job_pb2.ProgressEvent) -> JobRecord:
        target = event_state(event)
        when = timestamp_from_proto(event.time) if event.HasField("time") else utcnow()
        updates: dict[str, Any] = {
            "last_seq": event.seq,
            "phase": event.phase or job.phase,
            "progress_percent": event.progress_percent,
        }
        if target is None or (target is job.state and target is not JobState.PROGRESSING):
            return await self._store.update_job(job.job_id, event=event, **updates)
        reason = _reason(event, target)
        if target.is_terminal:
            result = result_to_dict(event.result) if event.HasField("result") else None
            updates.update(result=result, error=event.result.error.message or None)
            if target is not JobState.COMPLETED:
                decision = await self._decide(job, event)
                target, reason = decision.state, decision.reason
                updates.update(_decision_updates(decision, event))
            if target.is_terminal:
                updates["finished_at"] = when
        if job.state is JobState.ASSIGNED and target is not JobState.RUNNING:
            # The agent's first event is RUNNING; if a replay skipped it, pass through RUNNING
            # so the history stays a legal path.
            if is_allowed(JobState.RUNNING, target):
                await self._store.transition(
                    job.job_id, JobState.RUNNING, f"started on agent {event.agent}", started_at=when
                )
        elif target is JobState.RUNNING:
            updates["started_at"] = when
        try:
            return await self._store.transition(job.job_id, target, reason, event=event, **updates)
        except IllegalTransition as exc:
            log.warning("event state ignored job_id=%s seq=%d error=%s", job.job_id, event.seq, exc)
            return await self._store.update_job(job.job_id, event=event, **updates)

    async def _decide(self, job: JobRecord, event: job_pb2.ProgressEvent) -> Decision:
        """Retry, requeue, cancel or fail an attempt that ended without completing."""
        error = event.result.error
        code = error.code or (
            ErrorCode.CANCELLED if event.state == job_pb2.JOB_STATE_CANCELLED else ""
        )
        failure = error.message or _reason(event, JobState.FAILED)
        evicted = code == ErrorCode.CANCELLED and await self._evicted(job)
        decision = decide(job, code, failure, self._retry, evicted=evicted)
        log.info(
            "attempt ended job_id=%s attempt=%d code=%s outcome=%s reason=%r",
            job.job_id,
            job.attempt,
            code,
            decision.outcome,
            decision.reason,
        )
        return decision

    async def _evicted(self, job: JobRecord) -> bool:
        """Whether the job was cancelled because its agent is draining past its deadline."""
        if job.cancel_requested or not job.assigned_agent:
            return False
        try:
            agent = await self._store.get_agent(job.assigned_agent)
        except NotFound:
            return False
        deadline = agent.drain_deadline
        return agent.draining and deadline is not None and deadline <= utcnow()


def _changes_state(job: JobRecord, event: job_pb2.ProgressEvent) -> bool:
    """Whether an event moves the job to another state (it then goes through transition)."""
    target = event_state(event)
    return target is not None and target is not job.state


def _foreign(job: JobRecord, event: job_pb2.ProgressEvent) -> bool:
    """An event of an earlier attempt, or from an agent the job is no longer assigned to."""
    if event.attempt and job.attempt and event.attempt != job.attempt:
        return True
    return bool(event.agent and job.assigned_agent and event.agent != job.assigned_agent)


def _decision_updates(decision: Decision, event: job_pb2.ProgressEvent) -> dict[str, Any]:
    """Field changes that go with an attempt's outcome besides the agent's result."""
    if decision.outcome is Outcome.CANCEL and event.result.error.code != ErrorCode.CANCELLED:
        error = {"phase": event.phase, "code": ErrorCode.CANCELLED, "message": decision.reason}
        return {"result": {"error": error}, "error": decision.reason}
    if decision.outcome in (Outcome.RETRY, Outcome.REQUEUE):
        return {"queue_reason": decision.reason}
    return {}


def _reason(event: job_pb2.ProgressEvent, target: JobState) -> str:
    """The history reason of the transition an event causes."""
    agent = event.agent or "?"
    error = event.result.error
    if target is JobState.RUNNING:
        return f"started on agent {agent}"
    if target is JobState.PROGRESSING:
        return event.phase or "progressing"
    if target is JobState.COMPLETED:
        return f"completed on agent {agent}"
    if error.message:
        code = f"{error.code}: " if error.code else ""
        return f"{code}{error.message}"
    return f"{target.value.lower()} on agent {agent}"
