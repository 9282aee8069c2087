"""mount: the agent may mount file systems (root or CAP_SYS_ADMIN, and a mount binary)."""

from __future__ import annotations

import os

from agent import proc
from agent.probes.base import CAP_SYS_ADMIN, ProbeResult, available, has_capability, missing

NAME = "mount"


def probe() -> ProbeResult:
    binary = proc.which("mount")
    if binary is None:
        return missing(NAME, "mount is not on PATH")
    if not has_capability(CAP_SYS_ADMIN):
        return missing(NAME, f"uid {os.geteuid()} lacks CAP_SYS_ADMIN")
    return available(NAME, f"CAP_SYS_ADMIN held, {binary}")
