"""Builders of control-plane test data: job documents and specs, QUEUED job records, agent views.

Shared by the control-plane unit tests, the component tests and the store contract tests;
each hands them to its tests through a ``build`` fixture.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.models import JobRecord
from controlplane.placement import AgentView
from protocol.spec import JobSpec, parse_spec
from protocol.states import JobState

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GIB = 1024**3

_BASE_DOCUMENT: dict[str, Any] = {
    "version": "1.0",
    "job_id": "job-1",
    "operation": "convert",
    "image": {"path": "/data/input/vm.vmdk", "format": "vmdk"},
    "artifacts": {"output_path": "/data/output"},
    "audit": {"requested_by": "migration-team"},
    "parameters": {"output_format": "qcow2"},
}


def job_document(job_id: str = "job-1", **sections: Any) -> dict[str, Any]:
    """A valid v1 job document; keyword arguments replace or add top-level sections."""
    document = copy.deepcopy(_BASE_DOCUMENT)
    document["job_id"] = job_id
    document.update(copy.deepcopy(sections))
    return document


def job_spec(job_id: str = "job-1", **sections: Any) -> JobSpec:
    return parse_spec(job_document(job_id, **sections))


def queued_job(job_id: str, priority: int = 5, age_seconds: int = 0, **sections: Any) -> JobRecord:
    """A QUEUED job submitted ``age_seconds`` before T0 with the given priority."""
    sections.setdefault("execution_policy", {"priority": priority})
    spec = job_spec(job_id, **sections)
    submitted = T0 - timedelta(seconds=age_seconds)
    return JobRecord(
        job_id=job_id,
        spec=spec,
        fingerprint=spec.fingerprint(),
        state=JobState.QUEUED,
        submitted_at=submitted,
        updated_at=submitted,
    )


def agent(
    name: str,
    capabilities: tuple[str, ...] = ("qemu_img",),
    slots: int = 2,
    running: int = 0,
    heartbeat_age: int = 1,
    memory_gb: float = 16,
    disk_gb: float = 100,
    **flags: bool,
) -> AgentView:
    """An agent view as the dispatcher builds it, heartbeat ``heartbeat_age`` s before T0."""
    return AgentView(
        name=name,
        capabilities=frozenset(capabilities),
        max_concurrent_jobs=slots,
        running_jobs=running,
        last_heartbeat=T0 - timedelta(seconds=heartbeat_age),
        memory_total_bytes=int(memory_gb * GIB),
        disk_free_bytes=int(disk_gb * GIB),
        **flags,
    )


class Builders:
    """Test-data builders, handed to tests by the ``build`` fixture."""

    t0 = T0
    gib = GIB
    job_document = staticmethod(job_document)
    job_spec = staticmethod(job_spec)
    queued_job = staticmethod(queued_job)
    agent = staticmethod(agent)
