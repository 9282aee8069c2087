"""qemu_img: the qemu-img binary runs and reports its version."""

from __future__ import annotations

from agent import proc
from agent.probes.base import ProbeResult, available, missing, tool_version

NAME = "qemu_img"


def probe() -> ProbeResult:
    binary = proc.which("qemu-img")
    if binary is None:
        return missing(NAME, "qemu-img is not on PATH")
    try:
        version = tool_version(binary, ["--version"], r"version ([0-9][0-9.]*)")
    except proc.CommandError as exc:
        return missing(NAME, f"{binary} --version failed: {exc}")
    return available(NAME, binary, version)
