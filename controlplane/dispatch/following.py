"""Following a job's stream: start it on its agent, record every event, resume a broken stream.

Each attempt gets a task (:class:`~controlplane.dispatch.streams.StreamTasks`) that calls the
agent's ``Worker.ExecuteJob`` and records the events it streams. A broken stream is resumed
with ``AttachJob`` from the last stored seq, so neither an agent's hiccup nor a control-plane
restart loses or repeats an event. A stream is followed until its attempt ends or the agent's
lease runs out (the supervisor decides that); an agent is never declared lost just because a
stream broke.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import grpc

from controlplane.dispatch.context import DispatchContext
from controlplane.dispatch.streams import FollowedStream
from controlplane.models import JobRecord
from controlplane.progress import EventGap
from controlplane.store import ACTIVE_STATES
from controlplane.stream_batches import StreamBatches
from protocol.conversion import spec_to_proto
from protocol.errors import ErrorCode, NotFound
from protocol.gen.h2k.v1 import services_pb2
from protocol.states import JobState
from runtime.tracing import tracer

log = logging.getLogger(__name__)
_TRACER = tracer(__name__)

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


def span_attributes(job: JobRecord, agent: str) -> dict[str, str | int]:
    """The attributes of a job's control-plane spans."""
    return {
        "h2k.job_id": job.job_id,
        "h2k.operation": job.spec.operation.value,
        "h2k.agent": agent,
        "h2k.attempt": job.attempt,
    }


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


class StreamFollower:
    """Starts attempts on agents and relays their events into the store."""

    def __init__(self, ctx: DispatchContext) -> None:
        self._store = ctx.store
        self._clients = ctx.clients
        self._recorder = ctx.recorder
        self._ownership = ctx.ownership
        self._policy = ctx.policy
        self._streams = ctx.streams
        self._cancels = ctx.cancels
        self._requeuer = ctx.requeuer

    def start(self, job: JobRecord, stream: FollowedStream) -> None:
        """Run a just assigned attempt on its agent, in a task of its own.

        The task copies the current context: its spans are children of the caller's.
        """
        self._recorder.remember(job)
        self._streams.spawn(stream, self._dispatch(job, stream))

    async def resume(self, job: JobRecord) -> None:
        """Follow a job that was active when the control plane stopped (or lost its owner)."""
        try:
            agent = await self._store.get_agent(job.assigned_agent or "")
        except NotFound:
            # The supervisor ends it: an unregistered agent counts as lost.
            return
        log.info(
            "re-attaching job_id=%s agent=%s after_seq=%d", job.job_id, agent.name, job.last_seq
        )
        self.follow_again(FollowedStream(job.job_id, agent.name, agent.address, job.attempt))

    def follow_again(self, stream: FollowedStream) -> None:
        """Re-attach to an attempt that runs on its agent and that nobody follows."""
        self._streams.spawn(stream, self._reattach(stream))

    async def _dispatch(self, job: JobRecord, stream: FollowedStream) -> None:
        """Run the job on its agent inside the dispatch span (the ExecuteJob call's parent)."""
        with _TRACER.start_as_current_span(
            "controlplane.dispatch", attributes=span_attributes(job, stream.agent)
        ):
            await self._execute(job, stream)

    async def _execute(self, job: JobRecord, stream: FollowedStream) -> None:
        """Start the job on its agent and relay its events until the attempt ends.

        ``job`` is the record the assignment committed (no re-read per job): a cancel asked
        for after it is sent to the agent once the stream's first events are recorded.
        """
        if job.cancel_requested:
            await self._requeuer.requeue(stream, "cancelled before it started")
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
                self._cancels.send(stream, "a newer attempt of this job was dispatched")
        if stream.received == 0 and refused:
            # Nothing ran: the job goes back to the queue without using up a retry.
            reason = f"agent {stream.agent} did not accept the job ({failure})"
            await self._requeuer.requeue(stream, reason)
            return
        # Otherwise the agent may have started the job before the stream broke: ask it.
        log.warning(
            "job stream broke job_id=%s agent=%s error=%s", stream.job_id, stream.agent, failure
        )
        await self._reattach(stream)

    async def _reattach(self, stream: FollowedStream) -> None:
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
            if not _still_following(job, stream):
                return
            if job.state is JobState.ASSIGNED and tries >= len(delays):
                # Never heard of it starting: requeue (should it run there after all, the
                # agent reports it with its heartbeats and is told to cancel it).
                reason = f"agent {stream.agent} unreachable before the job started"
                await self._requeuer.requeue(stream, reason)
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

    async def _unknown_on_agent(self, stream: FollowedStream, job: JobRecord) -> None:
        """The agent does not know the job: it never started, or the agent lost its log."""
        if job.state is JobState.ASSIGNED:
            await self._requeuer.requeue(stream, f"agent {stream.agent} never started the job")
            return
        where = f"{job.phase or 'start'} at {job.progress_percent:.0f}%"
        await self._recorder.end_attempt(
            job.job_id,
            stream.attempt,
            code=ErrorCode.AGENT_LOST,
            message=f"agent {stream.agent} lost during {where} (it no longer knows the job)",
            agent=stream.agent,
        )

    async def _relay(self, call: Any, stream: FollowedStream) -> bool:
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

    async def _record_batch(self, batch: list[Any], stream: FollowedStream) -> bool:
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
        if not _still_following(job, stream):
            return True
        if job.cancel_requested and not stream.cancel_sent:
            self._cancels.send(stream, "cancel requested")
        return False


def _still_following(job: JobRecord, stream: FollowedStream) -> bool:
    return (
        job.state in ACTIVE_STATES
        and job.attempt == stream.attempt
        and job.assigned_agent == stream.agent
    )
