"""What a migration's jobs say about it: per-job views, bytes across all disks, an ETA, and
the first job that failed for good. Pure: records in, values out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from controlplane.migrations.plan import (
    DiskStep,
    cleanup_job_id,
    disk_steps,
    publish_job_id,
)
from controlplane.migrations.records import MigrationRecord
from controlplane.models import JobRecord
from protocol.conversion import state_to_proto
from protocol.gen.h2k.v1 import migration_pb2
from protocol.states import JobState


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    disks_done: int
    disks_total: int
    eta_seconds: float


def job_error(job: JobRecord) -> str:
    """The error message a terminal job ended with ("" when none)."""
    error = (job.result or {}).get("error") or {}
    message = str(error.get("message") or job.error or "")
    code = str(error.get("code") or "")
    return f"{code}: {message}" if code and message else message or job.state.value


def _ended_badly(job: JobRecord | None) -> bool:
    return job is not None and job.state.is_terminal and job.state is not JobState.COMPLETED


def first_failure(steps: list[DiskStep], jobs: Mapping[str, JobRecord]) -> str | None:
    """Why the migration cannot complete: the first disk job (in step order) that ended
    without completing, or a failed publish; None while none did."""
    for step in steps:
        job = jobs.get(step.job_id)
        if _ended_badly(job):
            assert job is not None
            how = job.state.value.lower()
            return f"disk {step.disk_id} ({step.role}, job {job.job_id}) {how}: {job_error(job)}"
    publish = next((j for j in jobs.values() if j.job_id.endswith(".publish")), None)
    if (
        publish is not None
        and publish.state.is_terminal
        and publish.state is not JobState.COMPLETED
    ):
        return f"publishing the outputs (job {publish.job_id}) failed: {job_error(publish)}"
    return None


def progress(record: MigrationRecord, jobs: Mapping[str, JobRecord], now: datetime) -> Progress:
    """Bytes across all disks (each disk's size times its job's progress)."""
    steps = disk_steps(record.spec)
    done = total = disks_done = 0
    for step in steps:
        size = step.bytes_total or 1
        total += size
        job = jobs.get(step.job_id)
        if job is None:
            continue
        if job.state is JobState.COMPLETED:
            done += size
            disks_done += 1
        else:
            done += int(size * min(100.0, job.progress_percent) / 100)
    started = next((t.time for t in record.history if t.to_state.value == "RUNNING"), None)
    eta = 0.0
    if started is not None and 0 < done < total and not record.state.is_terminal:
        elapsed = (now - started).total_seconds()
        eta = elapsed * (total - done) / done
    return Progress(done, total, disks_done, len(steps), eta)


def job_views(
    record: MigrationRecord, jobs: Mapping[str, JobRecord]
) -> list[migration_pb2.MigrationJob]:
    """One line per job of the migration (the ones not made yet show as not started)."""
    spec = record.spec
    base = spec.output_directory.rstrip("/")
    views = []
    for step in disk_steps(spec):
        job = jobs.get(step.job_id)
        view = migration_pb2.MigrationJob(
            job_id=step.job_id,
            disk_id=step.disk_id,
            role=step.role,
            bytes_total=step.bytes_total,
            output_path=f"{base}/{step.final_name}",
        )
        _fill(view, job, step.bytes_total)
        views.append(view)
    for job_id, role in (
        (publish_job_id(spec.migration_id), "publish"),
        (cleanup_job_id(spec.migration_id), "cleanup"),
    ):
        job = jobs.get(job_id)
        if job is not None:
            view = migration_pb2.MigrationJob(job_id=job_id, role=role)
            _fill(view, job, 0)
            views.append(view)
    return views


def _fill(view: migration_pb2.MigrationJob, job: JobRecord | None, size: int) -> None:
    if job is None:
        return
    view.state = state_to_proto(job.state)
    percent = 100.0 if job.state is JobState.COMPLETED else job.progress_percent
    view.progress_percent = percent
    view.bytes_done = int(size * percent / 100)
    if job.state.is_terminal and job.state is not JobState.COMPLETED:
        view.error = job_error(job)
