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
from protocol.gen.h2k.v1 import migration_pb2
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


def migration_spec(
    migration_id: str = "web-01-m1", repair: bool = True, **fields: Any
) -> migration_pb2.MigrationSpec:
    """A two-disk BIOS VM (boot disk-0, data disk-2, one NIC on 'VM Network' mapped to the
    libvirt network ``default``), repaired unless ``repair`` is false."""
    spec = migration_pb2.MigrationSpec(
        migration_id=migration_id,
        vm=migration_pb2.VmDefinition(
            name="web-01",
            cpus=2,
            memory_mib=4096,
            firmware="bios",
            provider="vsphere",
            datacenter="DC1",
            disks=[
                migration_pb2.VmDisk(
                    id="disk-0",
                    path="/in/web-01-1.vmdk",
                    source_format="vmdk",
                    capacity_bytes=2 << 30,
                    role="boot",
                ),
                migration_pb2.VmDisk(
                    id="disk-2",
                    path="/in/web-01-2.vmdk",
                    source_format="vmdk",
                    capacity_bytes=1 << 30,
                    role="data",
                ),
            ],
            nics=[migration_pb2.VmNic(id="nic-0", mac="00:50:56:ab:cd:ef", network="VM Network")],
        ),
        pipeline=migration_pb2.MigrationPipeline(
            repair=repair, fstab_mode="stabilize-all", update_grub=True, validate=True
        ),
        output_directory="/data/output",
        **fields,
    )
    spec.network_map["VM Network"].libvirt_network = "default"
    return spec


class Builders:
    """Test-data builders, handed to tests by the ``build`` fixture."""

    t0 = T0
    gib = GIB
    job_document = staticmethod(job_document)
    job_spec = staticmethod(job_spec)
    queued_job = staticmethod(queued_job)
    agent = staticmethod(agent)
