"""lvm: the lvm binary runs."""

from __future__ import annotations

from agent import proc
from agent.probes.base import ProbeResult, available, missing, tool_version

NAME = "lvm"


def probe() -> ProbeResult:
    binary = proc.which("lvm")
    if binary is None:
        return missing(NAME, "lvm is not on PATH")
    try:
        version = tool_version(binary, ["version"], r"LVM version:\s*([0-9][0-9.]*)")
    except proc.CommandError as exc:
        return missing(NAME, f"{binary} version failed: {exc}")
    return available(NAME, binary, version)
