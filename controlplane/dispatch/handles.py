"""What the servicers may ask of dispatching: narrow views of the dispatcher.

:class:`~controlplane.job_service.JobService` and
:class:`~controlplane.agent_registry.AgentRegistry` depend on these protocols, not on the
dispatcher, so neither reaches into how jobs are placed, followed or supervised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from controlplane.models import JobRecord


class JobControl(Protocol):
    """What the job API needs: a scheduling pass soon, and the two ways to cancel."""

    def wake(self) -> None:
        """Ask for a scheduling pass soon (a job was queued or a slot freed)."""

    async def cancel_unstarted(self, job: JobRecord, reason: str) -> JobRecord:
        """Record CANCELLED for a job no agent runs (CREATED, VALIDATED, QUEUED, RETRYING)."""

    async def cancel_on_agent(self, job: JobRecord, reason: str) -> bool:
        """Ask the job's agent to cancel it; False when the agent could not be asked."""


class AgentEvents(Protocol):
    """What the agent registry needs: a pass soon, and matching an agent's jobs with ours."""

    def wake(self) -> None:
        """Ask for a scheduling pass soon (an agent came, came back or was uncordoned)."""

    async def reconcile_agent(self, name: str, reported_job_ids: Sequence[str]) -> None:
        """Cancel the agent's orphans and follow its jobs that nobody follows."""
