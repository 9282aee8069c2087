"""Friendly, JSON-able dicts of jobs, events and agents (for ``-o json`` and other services).

States and enums by short name ("QUEUED", "convert", "READY"), timestamps as ISO-8601 UTC
strings ending in "Z" (None when unset), int64 fields as ints, the spec as its v1 document.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from protocol.conversion import (
    agent_state_name,
    operation_from_proto,
    spec_document_from_proto,
    struct_to_dict,
    timestamp_from_proto,
)
from protocol.gen.h2k.v1 import agent_pb2, job_pb2


def state_name(value: int) -> str:
    """ "QUEUED" for JOB_STATE_QUEUED; "UNSPECIFIED" when unset."""
    return str(job_pb2.JobState.Name(value)).removeprefix("JOB_STATE_")


def iso_time(ts: Timestamp, present: bool = True) -> str | None:
    """ISO-8601 UTC ("2025-01-02T03:04:05.678Z"), or None when the field is unset."""
    if not present:
        return None
    text = timestamp_from_proto(ts).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _time_field(message: Any, name: str) -> str | None:
    return iso_time(getattr(message, name), message.HasField(name))


def _plain_numbers(value: Any) -> Any:
    """Struct numbers are doubles; show whole numbers (byte counts) as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _plain_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(item) for item in value]
    return value


def _struct(struct: Struct) -> dict[str, Any]:
    return dict(_plain_numbers(struct_to_dict(struct)))


def error_to_dict(error: job_pb2.JobError) -> dict[str, str]:
    return {"phase": error.phase, "code": error.code, "message": error.message}


def result_to_dict(result: job_pb2.JobResult) -> dict[str, Any]:
    """Outputs, metrics, details, and the error (None unless failed or cancelled)."""
    has_error = result.HasField("error") and bool(result.error.code or result.error.message)
    return {
        "outputs": [
            {
                "kind": output.kind,
                "path": output.path,
                "size_bytes": int(output.size_bytes),
                "format": output.format,
                "sha256": output.sha256,
            }
            for output in result.outputs
        ],
        "metrics": _struct(result.metrics),
        "details": _struct(result.details),
        "error": error_to_dict(result.error) if has_error else None,
    }


def transition_to_dict(transition: job_pb2.StateTransition) -> dict[str, Any]:
    return {
        "from": state_name(transition.from_state),
        "to": state_name(transition.to_state),
        "time": _time_field(transition, "time"),
        "reason": transition.reason,
        "attempt": transition.attempt,
    }


def job_to_dict(job: job_pb2.Job) -> dict[str, Any]:
    """The whole job as a JSON-able dict."""
    return {
        "job_id": job.spec.job_id,
        "state": state_name(job.state),
        "operation": operation_from_proto(job.spec.operation),
        "image": job.spec.image.path,
        "assigned_agent": job.assigned_agent,
        "attempt": job.attempt,
        "queue_reason": job.queue_reason,
        "phase": job.phase,
        "progress_percent": job.progress_percent,
        "last_seq": int(job.last_seq),
        "cancel_requested": job.cancel_requested,
        "submitted_at": _time_field(job, "submitted_at"),
        "updated_at": _time_field(job, "updated_at"),
        "started_at": _time_field(job, "started_at"),
        "finished_at": _time_field(job, "finished_at"),
        "history": [transition_to_dict(t) for t in job.history],
        "result": result_to_dict(job.result),
        "spec": spec_document_from_proto(job.spec),
    }


def event_to_dict(event: job_pb2.ProgressEvent) -> dict[str, Any]:
    """One progress event; ``result`` only on the terminal event."""
    return {
        "job_id": event.job_id,
        "seq": int(event.seq),
        "time": _time_field(event, "time"),
        "state": state_name(event.state),
        "phase": event.phase,
        "progress_percent": event.progress_percent,
        "bytes_done": int(event.bytes_done),
        "bytes_total": int(event.bytes_total),
        "message": event.message,
        "details": dict(event.details),
        "attempt": event.attempt,
        "agent": event.agent,
        "result": result_to_dict(event.result) if event.HasField("result") else None,
    }


def agent_to_dict(agent: agent_pb2.AgentInfo) -> dict[str, Any]:
    """One agent, with its capability probes keyed by name."""
    caps = agent.capabilities
    return {
        "name": agent.name,
        "address": agent.address,
        "state": agent_state_name(agent.state),
        "version": agent.version,
        "max_concurrent_jobs": agent.max_concurrent_jobs,
        "running_job_ids": list(agent.running_job_ids),
        "registered_at": _time_field(agent, "registered_at"),
        "last_heartbeat": _time_field(agent, "last_heartbeat"),
        "drain_deadline": _time_field(agent, "drain_deadline"),
        "capability_level": str(agent_pb2.CapabilityLevel.Name(caps.level)).removeprefix(
            "CAPABILITY_LEVEL_"
        ),
        "execution_mode": str(agent_pb2.ExecutionMode.Name(caps.execution_mode)).removeprefix(
            "EXECUTION_MODE_"
        ),
        "memory_total_bytes": int(caps.memory_total_bytes),
        "memory_available_bytes": int(caps.memory_available_bytes),
        "disk_free_bytes": int(caps.disk_free_bytes),
        "capabilities": {
            probe.name: {
                "available": probe.available,
                "version": probe.version,
                "detail": probe.detail,
            }
            for probe in caps.probes
        },
    }
