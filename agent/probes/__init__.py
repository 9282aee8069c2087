"""Capability probes: one small module per capability, registered by name.

A probe never raises: a missing tool or device is reported as ``available=False`` with the
reason, so one broken probe cannot stop the agent from starting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.probes import (
    chroot,
    device_mapper,
    fuse,
    kvm,
    loop,
    lvm,
    mount,
    nbd,
    qemu_img,
    qemu_storage_daemon,
    selinux_tools,
)
from agent.probes.base import ProbeResult, missing

log = logging.getLogger(__name__)

Probe = Callable[[], ProbeResult]

PROBES: dict[str, Probe] = {
    module.NAME: module.probe
    for module in (
        qemu_img,
        qemu_storage_daemon,
        nbd,
        loop,
        fuse,
        mount,
        lvm,
        device_mapper,
        chroot,
        selinux_tools,
        kvm,
    )
}


def run_probe(name: str) -> ProbeResult:
    """Run one registered probe; an unexpected exception becomes "not available"."""
    try:
        return PROBES[name]()
    except Exception as exc:
        log.exception("capability probe crashed probe=%s", name)
        return missing(name, f"probe error: {exc}")


def run_probes() -> dict[str, ProbeResult]:
    """Run every registered probe, by name."""
    return {name: run_probe(name) for name in PROBES}


__all__ = ["PROBES", "ProbeResult", "run_probe", "run_probes"]
