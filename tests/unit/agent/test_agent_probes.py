"""Capability probes on this machine: every probe answers, none raises."""

from __future__ import annotations

from pathlib import Path

from agent.capabilities import CapabilityLevel, capability_level, detect_capabilities
from agent.probes import PROBES, ProbeResult, run_probes
from protocol.gen.h2k.v1 import agent_pb2

CONTRACT_NAMES = {
    "qemu_img",
    "qemu_storage_daemon",
    "nbd",
    "loop",
    "fuse",
    "mount",
    "lvm",
    "device_mapper",
    "chroot",
    "selinux_tools",
    "kvm",
}


def test_every_contract_probe_is_registered_and_answers() -> None:
    assert set(PROBES) == CONTRACT_NAMES
    results = run_probes()
    for name, result in results.items():
        assert result.name == name
        if not result.available:
            assert result.detail.startswith("not available: ")


def test_qemu_img_probe_reports_a_version() -> None:
    result = run_probes()["qemu_img"]
    assert result.available and result.version[0].isdigit()


def _probes(*present: str) -> dict[str, ProbeResult]:
    return {name: ProbeResult(name, name in present) for name in CONTRACT_NAMES}


def test_capability_level_follows_the_attach_and_mount_rules() -> None:
    assert capability_level(_probes()) is CapabilityLevel.NONE
    assert capability_level(_probes("qemu_img")) is CapabilityLevel.USERSPACE
    assert capability_level(_probes("qemu_img", "fuse", "loop")) is CapabilityLevel.USERSPACE
    fuse_path = ("qemu_img", "fuse", "loop", "qemu_storage_daemon")
    assert capability_level(_probes(*fuse_path)) is CapabilityLevel.INSPECTION
    assert capability_level(_probes("qemu_img", "nbd")) is CapabilityLevel.INSPECTION
    assert capability_level(_probes(*fuse_path, "mount", "chroot")) is CapabilityLevel.FULL


def test_detect_capabilities_fills_the_message(tmp_path: Path) -> None:
    caps = detect_capabilities([tmp_path])
    assert {p.name for p in caps.probes} == CONTRACT_NAMES
    assert caps.level != agent_pb2.CAPABILITY_LEVEL_UNSPECIFIED
    assert caps.execution_mode != agent_pb2.EXECUTION_MODE_UNSPECIFIED
    assert caps.memory_total_bytes > 0 and caps.disk_free_bytes > 0
