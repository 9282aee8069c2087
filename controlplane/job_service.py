"""The JobService servicer: submit, inspect, cancel and watch jobs."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence

from opentelemetry import trace

from controlplane.auth import (
    Principal,
    attribute_submission,
    check_may_cancel,
    current_principal,
)
from controlplane.dispatch.handles import JobControl
from controlplane.events import EventHub, Subscription
from controlplane.job_cancel import cancel_job
from controlplane.metrics import JOBS_SUBMITTED, observe_submit
from controlplane.store import JobStore
from controlplane.submission import validate_submission
from controlplane.watch_batches import BatchMessages
from protocol.conversion import state_from_proto, utcnow
from protocol.errors import FailedPrecondition, InvalidArgument, Unavailable
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc
from protocol.spec import JobSpec
from runtime.status import Context, stream_rpc, unary_rpc
from runtime.tracing import current_traceparent, tracer, tracing_enabled

log = logging.getLogger(__name__)
_TRACER = tracer(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
REPLAY_BATCH = 500
# Specs per SubmitJobs call (one transaction; the client's 4 MiB message limit binds first
# for large specs).
MAX_BATCH = 1000


class JobService(services_pb2_grpc.JobServiceServicer):
    """Jobs for h2kctl and other services."""

    def __init__(self, store: JobStore, hub: EventHub, dispatcher: JobControl) -> None:
        self._store = store
        self._hub = hub
        self._dispatcher = dispatcher
        self._batch_messages = BatchMessages()

    @unary_rpc
    async def SubmitJob(
        self, request: services_pb2.SubmitJobRequest, context: Context
    ) -> services_pb2.SubmitJobResponse:
        started = time.monotonic()
        try:
            if not tracing_enabled():
                # The span and the traceparent would be no-ops: not even made.
                return await self._submit(request, None)
            with _TRACER.start_as_current_span("controlplane.submit") as span:
                return await self._submit(request, span)
        finally:
            observe_submit(started)

    async def _submit(
        self, request: services_pb2.SubmitJobRequest, span: trace.Span | None
    ) -> services_pb2.SubmitJobResponse:
        spec = attribute_submission(validate_submission(request.spec), current_principal())
        traceparent = ""
        if span is not None:
            span.set_attribute("h2k.job_id", spec.job_id)
            span.set_attribute("h2k.operation", spec.operation.value)
            # The dispatch happens later, in another task: it continues this span's trace.
            traceparent = current_traceparent()
        now = utcnow()
        if spec.created_at is None:
            spec = spec.model_copy(update={"created_at": now})
        job, created = await self._store.create_job(spec, now, traceparent)
        if span is not None:
            span.set_attribute("h2k.created", created)
        log.info(
            "job submitted job_id=%s operation=%s priority=%d created=%s",
            job.job_id,
            spec.operation,
            spec.execution_policy.priority,
            created,
        )
        if created:
            JOBS_SUBMITTED.inc()
            self._dispatcher.wake()
        return services_pb2.SubmitJobResponse(job=job.to_proto(), created=created)

    @unary_rpc
    async def SubmitJobs(
        self, request: services_pb2.SubmitJobsRequest, context: Context
    ) -> services_pb2.SubmitJobsResponse:
        started = time.monotonic()
        try:
            with _TRACER.start_as_current_span("controlplane.submit_jobs") as span:
                span.set_attribute("h2k.jobs", len(request.specs))
                return await self._submit_many(request)
        finally:
            observe_submit(started)

    async def _submit_many(
        self, request: services_pb2.SubmitJobsRequest
    ) -> services_pb2.SubmitJobsResponse:
        specs = _validated_batch(request.specs, current_principal())
        now = utcnow()
        specs = [s if s.created_at else s.model_copy(update={"created_at": now}) for s in specs]
        stored = await self._store.create_jobs(specs, now, current_traceparent())
        created = sum(1 for _job, new in stored if new)
        log.info("jobs submitted count=%d created=%d", len(stored), created)
        if created:
            JOBS_SUBMITTED.inc(created)
            self._dispatcher.wake()
        return services_pb2.SubmitJobsResponse(
            results=[
                services_pb2.SubmitJobResponse(job=job.to_proto(), created=new)
                for job, new in stored
            ]
        )

    @unary_rpc
    async def GetJob(self, request: services_pb2.GetJobRequest, context: Context) -> job_pb2.Job:
        return (await self._store.get_job(request.job_id)).to_proto()

    @unary_rpc
    async def ListJobs(
        self, request: services_pb2.ListJobsRequest, context: Context
    ) -> services_pb2.ListJobsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size: must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        offset = _offset_from_token(request.page_token)
        states = [state_from_proto(s) for s in request.states]
        page = await self._store.list_jobs(states=states, limit=size, offset=offset)
        token = "" if page.next_offset is None else str(page.next_offset)
        return services_pb2.ListJobsResponse(
            jobs=[j.to_proto() for j in page.jobs], next_page_token=token
        )

    @unary_rpc
    async def CancelJob(
        self, request: services_pb2.CancelJobRequest, context: Context
    ) -> job_pb2.Job:
        job = await self._store.get_job(request.job_id)
        check_may_cancel(job.spec, current_principal())
        reason = request.reason or "cancelled on request"
        if job.state.is_terminal:
            raise FailedPrecondition(f"job {job.job_id} is already {job.state.value}")
        job = await cancel_job(self._store, self._dispatcher, job, reason)
        return job.to_proto()

    @stream_rpc
    async def WatchJob(
        self, request: services_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[job_pb2.ProgressEvent]:
        async for events in self._watch(request):
            for event in events:
                yield event

    @stream_rpc
    async def WatchJobBatches(
        self, request: services_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[services_pb2.ProgressEventBatch]:
        # Everything pending goes out with each write: the busier the job, the larger the
        # batches, and the number of messages stays what the watcher can take.
        async for events in self._watch(request):
            for message in self._batch_messages.messages(events):
                yield message

    async def _watch(
        self, request: services_pb2.WatchJobRequest
    ) -> AsyncIterator[list[job_pb2.ProgressEvent]]:
        """A watch's events in seq order, each once, in groups as they become available.

        Replays stored events after ``after_seq``, follows live, ends when the job is
        terminal; a watcher that lagged (or heard of a change it has no event for) reads the
        store again from its last seq, the job's state with the events (one small read, not
        the whole job). Only stored (committed) events are ever sent.
        """
        job_id = request.job_id
        last = max(0, request.after_seq)
        # Subscribe before the first read so nothing published meanwhile is missed.
        with self._hub.subscribe(job_id) as subscription:
            while True:
                if self._hub.closed:
                    raise Unavailable("the control plane is stopping: reconnect to watch on")
                # Buffer again before reading the store, so nothing falls between the two.
                subscription.clear_lag()
                state, events = await self._store.events_with_state(job_id, last, REPLAY_BATCH)
                while events:
                    last = events[-1].seq
                    yield events
                    if len(events) < REPLAY_BATCH:
                        break
                    events = await self._store.list_events(
                        job_id, after_seq=last, limit=REPLAY_BATCH
                    )
                if state.is_terminal:
                    return
                async for events in _follow(subscription, last, self._hub.recheck_seconds):
                    last = events[-1].seq
                    yield events

    @unary_rpc
    async def ListJobEvents(
        self, request: services_pb2.ListJobEventsRequest, context: Context
    ) -> services_pb2.ListJobEventsResponse:
        if request.limit < 0:
            raise InvalidArgument("limit: must not be negative")
        await self._store.get_job(request.job_id)
        events = await self._store.list_events(
            request.job_id, after_seq=max(0, request.after_seq), limit=request.limit or None
        )
        return services_pb2.ListJobEventsResponse(events=events)


async def _follow(
    subscription: Subscription, last: int, recheck_seconds: float
) -> AsyncIterator[list[job_pb2.ProgressEvent]]:
    """Live events in seq order, in the groups they were buffered in; returns when the
    store must be read again (lagged, terminal, a gap, or nothing heard for a while)."""
    while not (subscription.lagged or subscription.terminal):
        events = await subscription.wait(recheck_seconds)
        if not events:
            return
        fresh, gap = _following(events, last)
        if fresh:
            last = fresh[-1].seq
            yield fresh
        if gap:
            return  # the store has what the buffer lacks


def _following(
    events: list[job_pb2.ProgressEvent], last: int
) -> tuple[list[job_pb2.ProgressEvent], bool]:
    """The events that follow seq ``last`` without a gap, and whether a gap cut them short."""
    fresh: list[job_pb2.ProgressEvent] = []
    for event in events:
        if event.seq <= last:
            continue
        if event.seq != last + 1:
            return fresh, True
        last = event.seq
        fresh.append(event)
    return fresh, False


def _validated_batch(messages: Sequence[job_pb2.JobSpec], principal: Principal) -> list[JobSpec]:
    """The specs of a SubmitJobs request, or InvalidArgument naming every bad one."""
    if not messages:
        raise InvalidArgument("specs: at least one spec")
    if len(messages) > MAX_BATCH:
        raise InvalidArgument(f"specs: at most {MAX_BATCH} per call (got {len(messages)})")
    specs: list[JobSpec] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    for index, message in enumerate(messages):
        try:
            spec = attribute_submission(validate_submission(message), principal)
        except InvalidArgument as exc:
            problems.append(f"specs[{index}]: {exc.message}")
            continue
        seen = first.setdefault(spec.job_id, index)
        if seen != index:
            problems.append(f"specs[{index}].job_id: repeats specs[{seen}].job_id")
        specs.append(spec)
    if problems:
        raise InvalidArgument("; ".join(problems))
    return specs


def _offset_from_token(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise InvalidArgument("page_token: not a token this server issued")
    return int(token)
