"""Agents killed, restarted, timed out: every job gets a defined outcome, nothing is left."""

from __future__ import annotations

import pytest

from tests.reliability import scenarios
from tests.support.faults import FaultCluster


def test_agent_killed_mid_convert_retries_on_the_second_agent(faults: FaultCluster) -> None:
    scenarios.agent_killed_with_retry_left(faults)


@pytest.mark.parametrize("restart_at_once", [False, True], ids=["lease-ran-out", "restarted"])
def test_agent_killed_mid_convert_without_retry_fails_naming_it(
    faults: FaultCluster, restart_at_once: bool
) -> None:
    scenarios.agent_killed_without_retry(faults, restart_at_once)


def test_a_job_past_its_timeout_fails_with_timeout_and_leaves_nothing(
    faults: FaultCluster,
) -> None:
    scenarios.job_times_out(faults)
