"""Drain and graceful shutdown: running work finishes, or is requeued past the deadline."""

from __future__ import annotations

from tests.reliability import scenarios
from tests.support.faults import FaultCluster


def test_drain_takes_no_new_work_and_lets_the_running_job_finish(faults: FaultCluster) -> None:
    scenarios.drain_with_running_job(faults)


def test_drain_past_its_deadline_requeues_the_running_job(faults: FaultCluster) -> None:
    scenarios.drain_deadline_requeues(faults)


def test_sigterm_on_an_agent_finishes_its_job_within_the_grace_period(
    faults: FaultCluster,
) -> None:
    scenarios.sigterm_agent_within_grace(faults)


def test_sigterm_past_the_grace_period_requeues_the_job(faults: FaultCluster) -> None:
    scenarios.sigterm_agent_past_grace(faults)
