"""What this node can do: probes, execution mode, capability level, memory and disk.

Probing runs tools, so it happens once at start (:func:`detect_capabilities`); heartbeats only
refresh the memory and disk figures (:func:`refresh_resources`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path

import psutil

from agent.probes import ProbeResult, run_probes
from agent.probes.base import CAP_SYS_ADMIN, effective_capabilities
from protocol.gen.h2k.v1 import agent_pb2


class ExecutionMode(StrEnum):
    HOST = "HOST"
    PRIVILEGED_CONTAINER = "PRIVILEGED_CONTAINER"
    SAFE_CONTAINER = "SAFE_CONTAINER"


class CapabilityLevel(StrEnum):
    NONE = "UNSPECIFIED"  # not even qemu-img: the agent can run nothing
    USERSPACE = "USERSPACE"
    INSPECTION = "INSPECTION"
    FULL = "FULL"


_CONTAINER_MARKERS = ("docker", "kubepods", "containerd", "libpod", "lxc")


def in_container(root: Path = Path("/")) -> bool:
    """Whether this process runs in a container (marker files, or a container cgroup)."""
    if (root / ".dockerenv").exists() or (root / "run/.containerenv").exists():
        return True
    try:
        cgroup = (root / "proc/self/cgroup").read_text()
    except OSError:
        return False
    return any(marker in cgroup for marker in _CONTAINER_MARKERS)


def detect_execution_mode() -> ExecutionMode:
    if not in_container():
        return ExecutionMode.HOST
    if effective_capabilities() >> CAP_SYS_ADMIN & 1:
        return ExecutionMode.PRIVILEGED_CONTAINER
    return ExecutionMode.SAFE_CONTAINER


def capability_level(probes: Mapping[str, ProbeResult]) -> CapabilityLevel:
    """USERSPACE: qemu-img; INSPECTION: also attach an image; FULL: also mount and chroot."""

    def has(name: str) -> bool:
        result = probes.get(name)
        return result is not None and result.available

    if not has("qemu_img"):
        return CapabilityLevel.NONE
    can_attach = has("nbd") or (has("fuse") and has("qemu_storage_daemon") and has("loop"))
    if not can_attach:
        return CapabilityLevel.USERSPACE
    if has("mount") and has("chroot"):
        return CapabilityLevel.FULL
    return CapabilityLevel.INSPECTION


def disk_free_bytes(dirs: Sequence[Path]) -> int:
    """Free space available to the agent: the minimum over its output directories."""
    free = []
    for directory in dirs:
        try:
            stats = os.statvfs(directory)
        except OSError:
            continue
        free.append(stats.f_bavail * stats.f_frsize)
    return min(free) if free else 0


def refresh_resources(caps: agent_pb2.Capabilities, allow_output: Sequence[Path]) -> None:
    """Update the memory and disk figures of ``caps`` in place."""
    memory = psutil.virtual_memory()
    caps.memory_total_bytes = memory.total
    caps.memory_available_bytes = memory.available
    caps.disk_free_bytes = disk_free_bytes(allow_output)


def capabilities_to_proto(
    probes: Mapping[str, ProbeResult], mode: ExecutionMode, allow_output: Sequence[Path]
) -> agent_pb2.Capabilities:
    caps = agent_pb2.Capabilities(
        probes=[
            agent_pb2.CapabilityProbe(
                name=p.name, available=p.available, version=p.version, detail=p.detail
            )
            for p in probes.values()
        ],
        execution_mode=f"EXECUTION_MODE_{mode.value}",
        level=f"CAPABILITY_LEVEL_{capability_level(probes).value}",
    )
    refresh_resources(caps, allow_output)
    return caps


def detect_capabilities(allow_output: Sequence[Path]) -> agent_pb2.Capabilities:
    """Run every probe and describe this node (blocking: runs short probe commands)."""
    return capabilities_to_proto(run_probes(), detect_execution_mode(), allow_output)


def summarize(caps: agent_pb2.Capabilities) -> str:
    """A one-line summary for the start-up log."""
    present = ",".join(p.name for p in caps.probes if p.available) or "none"
    level = agent_pb2.CapabilityLevel.Name(caps.level).removeprefix("CAPABILITY_LEVEL_")
    mode = agent_pb2.ExecutionMode.Name(caps.execution_mode).removeprefix("EXECUTION_MODE_")
    return (
        f"level={level} mode={mode} available={present} "
        f"memory_total_bytes={caps.memory_total_bytes} disk_free_bytes={caps.disk_free_bytes}"
    )
