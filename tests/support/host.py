"""What this machine lacks for a test folder, as a skip reason (None: nothing is missing)."""

from __future__ import annotations

import os
import shutil

from tests.support.debian_guests import missing_tools

PRIVILEGED_TOOLS = (
    "qemu-storage-daemon",
    "qemu-img",
    "sfdisk",
    "mkfs.xfs",
    "mkfs.ext4",
    "losetup",
)


def missing_for_privileged() -> str | None:
    """Why tests/privileged cannot run here: they need root, loop devices, FUSE and tools."""
    if os.geteuid() != 0:
        return "needs root (loop devices, mount)"
    for device in ("/dev/fuse", "/dev/loop-control"):
        if not os.path.exists(device):
            return f"{device} is missing"
    for tool in PRIVILEGED_TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run `make setup`"
    return None


def missing_for_boot() -> str | None:
    """Why tests/boot cannot run here: tests/privileged's needs, the guest builder's, QEMU's."""
    if (problem := missing_for_privileged() or missing_tools()) is not None:
        return problem
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed: run `make setup`"
    if not os.path.exists("/usr/share/OVMF/OVMF_CODE_4M.fd"):
        return "OVMF is not installed: run `make setup`"
    return None
