"""Control-plane restarts (kill -9 and SIGTERM): nothing lost, nothing repeated."""

from __future__ import annotations

import signal

import pytest

from tests.reliability import scenarios
from tests.support.faults import FaultCluster


def test_kill_controlplane_while_twenty_jobs_run_on_two_agents(faults: FaultCluster) -> None:
    scenarios.controlplane_killed_during_jobs(faults, jobs=20)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_watcher_through_controlplane_restart_sees_every_event_once(
    faults: FaultCluster, sig: int
) -> None:
    scenarios.watcher_through_controlplane_restart(faults, sig)


def test_every_acknowledged_submission_survives_kill_9(faults: FaultCluster) -> None:
    scenarios.submissions_survive_kill(faults, count=1000)
