"""loop: /dev/loop-control can be opened read-write (loop devices can be allocated)."""

from __future__ import annotations

from agent.probes.base import ProbeResult, available, missing, open_device

NAME = "loop"


def probe() -> ProbeResult:
    problem = open_device("/dev/loop-control")
    if problem is not None:
        return missing(NAME, problem)
    return available(NAME, "/dev/loop-control opens read-write")
