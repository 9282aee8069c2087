"""qemu_storage_daemon: can export an image over FUSE (the nbd-less attach path)."""

from __future__ import annotations

from agent import proc
from agent.probes.base import ProbeResult, available, missing, tool_version

NAME = "qemu_storage_daemon"


def probe() -> ProbeResult:
    binary = proc.which("qemu-storage-daemon")
    if binary is None:
        return missing(NAME, "qemu-storage-daemon is not on PATH")
    try:
        version = tool_version(binary, ["--version"], r"version ([0-9][0-9.]*)")
    except proc.CommandError as exc:
        return missing(NAME, f"{binary} --version failed: {exc}")
    return available(NAME, binary, version)
