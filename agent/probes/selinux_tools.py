"""selinux_tools: setfiles or restorecon is installed (to relabel a guest)."""

from __future__ import annotations

from agent import proc
from agent.probes.base import ProbeResult, available, missing

NAME = "selinux_tools"


def probe() -> ProbeResult:
    found = [path for tool in ("setfiles", "restorecon") if (path := proc.which(tool))]
    if not found:
        return missing(NAME, "neither setfiles nor restorecon is on PATH")
    return available(NAME, ", ".join(found))
