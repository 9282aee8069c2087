"""The gRPC Worker service: the control plane's handle on this agent.

Exceptions become gRPC status in :mod:`runtime.status`, as on the control plane. Job failures
are not gRPC errors: they arrive as FAILED terminal events.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from agent.events import EventLog, is_terminal
from agent.executor import Executor
from protocol.errors import NotFound
from protocol.gen.h2k.v1 import agent_pb2, job_pb2, services_pb2, services_pb2_grpc
from runtime.status import Context, stream_rpc, unary_rpc

log = logging.getLogger(__name__)


class WorkerService(services_pb2_grpc.WorkerServicer):
    """ExecuteJob, AttachJob, CancelJob and GetCapabilities."""

    def __init__(
        self,
        executor: Executor,
        event_log: EventLog,
        capabilities: Callable[[], agent_pb2.Capabilities],
    ) -> None:
        self._executor = executor
        self._events = event_log
        self._capabilities = capabilities

    @stream_rpc
    async def ExecuteJob(
        self, request: services_pb2.ExecuteJobRequest, context: Context
    ) -> AsyncIterator[job_pb2.ProgressEvent]:
        subscription = self._executor.start(request)
        # If the caller goes away the job keeps running; it can be re-attached.
        async for event in subscription:
            yield event

    @stream_rpc
    async def AttachJob(
        self, request: services_pb2.AttachJobRequest, context: Context
    ) -> AsyncIterator[job_pb2.ProgressEvent]:
        async for event in self._attach(request.job_id, request.after_seq):
            yield event

    async def _attach(self, job_id: str, after_seq: int) -> AsyncIterator[job_pb2.ProgressEvent]:
        # Subscribe before reading the log so nothing falls between the two; seq dedups.
        live = self._events.subscribe(job_id) if self._executor.is_running(job_id) else None
        try:
            logged = self._events.read_after(job_id, after_seq)
            if live is None and not logged and not self._events.exists(job_id):
                raise NotFound(f"job {job_id} is unknown to this agent")
            last = after_seq
            for event in logged:
                yield event
                last = event.seq
                if is_terminal(event):
                    return
            if live is None:
                last_logged = self._events.last_event(job_id)
                if last_logged is not None and is_terminal(last_logged):
                    return  # finished; the caller already has every event up to the end
                raise NotFound(f"job {job_id} is not running here and its log has no end")
            async for event in live:
                if event.seq > last:
                    yield event
                    last = event.seq
        finally:
            if live is not None:
                live.close()

    @unary_rpc
    async def CancelJob(
        self, request: services_pb2.WorkerCancelJobRequest, context: Context
    ) -> services_pb2.WorkerCancelJobResponse:
        state = await self._executor.cancel(request.job_id, request.reason)
        if state is not None:
            return services_pb2.WorkerCancelJobResponse(found=True, state=state)
        last = self._events.last_event(request.job_id)
        if last is None:
            return services_pb2.WorkerCancelJobResponse(found=False)
        return services_pb2.WorkerCancelJobResponse(found=True, state=last.state)

    @unary_rpc
    async def GetCapabilities(
        self, request: services_pb2.GetCapabilitiesRequest, context: Context
    ) -> agent_pb2.Capabilities:
        return self._capabilities()
