"""fuse: /dev/fuse can be opened read-write."""

from __future__ import annotations

from agent.probes.base import ProbeResult, available, missing, open_device

NAME = "fuse"


def probe() -> ProbeResult:
    problem = open_device("/dev/fuse")
    if problem is not None:
        return missing(NAME, problem)
    return available(NAME, "/dev/fuse opens read-write")
