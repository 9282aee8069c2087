"""Cancelling one job, the same way for the job API and for a migration ending its jobs."""

from __future__ import annotations

import logging

from controlplane.dispatch.handles import JobControl
from controlplane.models import JobRecord
from controlplane.store import ACTIVE_STATES, JobStore

log = logging.getLogger(__name__)


async def cancel_job(
    store: JobStore, control: JobControl, job: JobRecord, reason: str
) -> JobRecord:
    """Cancel a non-terminal job: at once when no agent runs it, else through its agent.

    An active job gets ``cancel_requested``; CANCELLED is recorded when the agent confirms
    (its terminal event) or is lost, and an agent that cannot be asked now is asked again.
    """
    if job.state not in ACTIVE_STATES:
        return await control.cancel_unstarted(job, reason)
    if not job.cancel_requested:
        job = await store.update_job(job.job_id, cancel_requested=True)
    if await control.cancel_on_agent(job, reason):
        log.info("cancel sent job_id=%s agent=%s", job.job_id, job.assigned_agent)
    else:
        log.warning("cancel pending job_id=%s agent=%s", job.job_id, job.assigned_agent)
    return job
