"""Reading the jobs a migration made so far."""

from __future__ import annotations

from controlplane.migrations import plan
from controlplane.migrations.records import MigrationRecord
from controlplane.models import JobRecord
from controlplane.store import JobStore
from protocol.errors import NotFound


async def jobs_of(store: JobStore, record: MigrationRecord) -> dict[str, JobRecord]:
    """The jobs the migration made so far, by id."""
    mid = record.migration_id
    ids = [s.job_id for s in plan.disk_steps(record.spec)]
    ids += [plan.publish_job_id(mid), plan.cleanup_job_id(mid)]
    jobs = {}
    for job_id in ids:
        try:
            jobs[job_id] = await store.get_job(job_id)
        except NotFound:
            continue
    return jobs
