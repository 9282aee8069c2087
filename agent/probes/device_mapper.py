"""device_mapper: /dev/mapper/control can be opened read-write."""

from __future__ import annotations

from agent.probes.base import ProbeResult, available, missing, open_device

NAME = "device_mapper"


def probe() -> ProbeResult:
    problem = open_device("/dev/mapper/control")
    if problem is not None:
        return missing(NAME, problem)
    return available(NAME, "/dev/mapper/control opens read-write")
