"""A slow watcher is bounded and resumes by seq; it never slows the job or other watchers."""

from __future__ import annotations

from tests.reliability import scenarios
from tests.support.faults import FaultCluster


def test_a_slow_watcher_holds_nobody_up_and_misses_nothing(faults: FaultCluster) -> None:
    scenarios.slow_watcher_does_not_hold_anyone_up(faults)
