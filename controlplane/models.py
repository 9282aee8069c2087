"""The control plane's records of jobs and agents, converted to protobuf only at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf import json_format

from protocol.conversion import set_timestamp, spec_to_proto, state_to_proto
from protocol.gen.h2k.v1 import agent_pb2, job_pb2
from protocol.spec import JobSpec
from protocol.states import JobState
from runtime.tracing import trace_id_of


@dataclass(frozen=True)
class Transition:
    """One row of a job's state history (the job is inserted as CREATED without a row)."""

    from_state: JobState
    to_state: JobState
    time: datetime
    reason: str
    attempt: int

    def to_proto(self) -> job_pb2.StateTransition:
        msg = job_pb2.StateTransition(
            from_state=state_to_proto(self.from_state),
            to_state=state_to_proto(self.to_state),
            reason=self.reason,
            attempt=self.attempt,
        )
        set_timestamp(msg.time, self.time)
        return msg


@dataclass
class JobRecord:
    """A job as the store keeps it."""

    job_id: str
    spec: JobSpec
    fingerprint: str
    state: JobState
    submitted_at: datetime
    updated_at: datetime
    attempt: int = 0
    assigned_agent: str | None = None
    queue_reason: str = ""
    # JobResult as a JSON-shaped dict (json_format field names); None until terminal.
    result: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_seq: int = 0
    phase: str = ""
    progress_percent: float = 0.0
    cancel_requested: bool = False
    history: list[Transition] = field(default_factory=list)
    # W3C traceparent of the submit's span: the dispatch, later, continues that trace.
    trace_context: str = ""

    @property
    def priority(self) -> int:
        return self.spec.execution_policy.priority

    def to_proto(self) -> job_pb2.Job:
        """The Job message clients see."""
        msg = job_pb2.Job(
            spec=spec_to_proto(self.spec),
            state=state_to_proto(self.state),
            history=[t.to_proto() for t in self.history],
            assigned_agent=self.assigned_agent or "",
            attempt=self.attempt,
            queue_reason=self.queue_reason,
            last_seq=self.last_seq,
            phase=self.phase,
            progress_percent=self.progress_percent,
            cancel_requested=self.cancel_requested,
            trace_id=trace_id_of(self.trace_context),
        )
        if self.result is not None:
            json_format.ParseDict(self.result, msg.result, ignore_unknown_fields=True)
        for name in ("submitted_at", "updated_at", "started_at", "finished_at"):
            value: datetime | None = getattr(self, name)
            if value is not None:
                set_timestamp(getattr(msg, name), value)
        return msg


def result_to_dict(result: job_pb2.JobResult) -> dict[str, Any]:
    """A JobResult message as the JSON-shaped dict a JobRecord keeps."""
    return json_format.MessageToDict(result, preserving_proto_field_name=True)


def error_result(phase: str, code: str, message: str) -> dict[str, Any]:
    """The result dict of a job the control plane ends itself (cancel, agent lost)."""
    return {"error": {"phase": phase, "code": code, "message": message}}


@dataclass(frozen=True)
class QueuedJob:
    """What placing a queued job takes: no spec, no history (see :func:`needs_kind`)."""

    job_id: str
    priority: int
    submitted_at: datetime
    attempt: int
    kind: str


@dataclass(frozen=True)
class QueueKind:
    """The queued jobs of one kind: how many, and since when the oldest waits."""

    kind: str
    count: int
    oldest_submitted_at: datetime


@dataclass
class AgentRecord:
    """A registered node agent as the store keeps it."""

    name: str
    address: str
    capabilities: agent_pb2.Capabilities
    max_concurrent_jobs: int
    registered_at: datetime
    last_heartbeat: datetime
    version: str = ""
    cordoned: bool = False
    draining: bool = False
    drain_deadline: datetime | None = None

    def available_capabilities(self) -> frozenset[str]:
        """The names of the probes this agent reports as available."""
        return frozenset(p.name for p in self.capabilities.probes if p.available)

    def to_proto(
        self, state: agent_pb2.AgentState, running_job_ids: list[str]
    ) -> agent_pb2.AgentInfo:
        """The AgentInfo message admins see (the state is decided by the registry)."""
        msg = agent_pb2.AgentInfo(
            name=self.name,
            address=self.address,
            capabilities=self.capabilities,
            max_concurrent_jobs=self.max_concurrent_jobs,
            state=state,
            running_job_ids=running_job_ids,
            version=self.version,
        )
        msg.registered_at.FromDatetime(self.registered_at)
        msg.last_heartbeat.FromDatetime(self.last_heartbeat)
        if self.drain_deadline is not None:
            msg.drain_deadline.FromDatetime(self.drain_deadline)
        return msg
