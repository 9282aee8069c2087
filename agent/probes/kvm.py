"""kvm: /dev/kvm can be opened read-write (a guest could be booted to test a fix)."""

from __future__ import annotations

from agent.probes.base import ProbeResult, available, missing, open_device

NAME = "kvm"


def probe() -> ProbeResult:
    problem = open_device("/dev/kvm")
    if problem is not None:
        return missing(NAME, problem)
    return available(NAME, "/dev/kvm opens read-write")
