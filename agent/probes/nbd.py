"""nbd: the kernel nbd module is loaded and /dev/nbd0 can be opened."""

from __future__ import annotations

from pathlib import Path

from agent.probes.base import ProbeResult, available, missing, open_device

NAME = "nbd"


def probe() -> ProbeResult:
    if not Path("/sys/module/nbd").exists():
        return missing(NAME, "the nbd kernel module is not loaded (modprobe nbd)")
    problem = open_device("/dev/nbd0", 0)
    if problem is not None:
        return missing(NAME, problem)
    return available(NAME, "nbd module loaded, /dev/nbd0 opens")
