"""chroot: the agent may chroot into a guest (CAP_SYS_CHROOT and a chroot binary)."""

from __future__ import annotations

import os

from agent import proc
from agent.probes.base import CAP_SYS_CHROOT, ProbeResult, available, has_capability, missing

NAME = "chroot"


def probe() -> ProbeResult:
    binary = proc.which("chroot")
    if binary is None:
        return missing(NAME, "chroot is not on PATH")
    if not has_capability(CAP_SYS_CHROOT):
        return missing(NAME, f"uid {os.geteuid()} lacks CAP_SYS_CHROOT")
    return available(NAME, f"CAP_SYS_CHROOT held, {binary}")
