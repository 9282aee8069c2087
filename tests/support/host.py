"""What this machine lacks for a test folder, as a skip reason (None: nothing is missing)."""

from __future__ import annotations

import os
import shutil

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
