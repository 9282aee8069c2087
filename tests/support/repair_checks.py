"""What the privileged repair tests check on the node after a job: nothing left attached."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import psutil


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def loops_under(directory: Path) -> list[str]:
    """Loop devices whose backing file lies under ``directory`` (``losetup -a``, filtered:
    other test suites on this machine may hold loop devices of their own)."""
    found = []
    for entry in Path("/sys/block").glob("loop*"):
        try:
            backing = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(str(directory)):
            found.append(f"/dev/{entry.name} -> {backing}")
    return found


def mounts_under(directory: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ")[4].replace("\\040", " ")
        if point.startswith(str(directory)):
            found.append(point)
    return found


def storage_daemons_under(directory: Path) -> list[int]:
    """Live qemu-storage-daemon processes whose command line names ``directory``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("status") == psutil.STATUS_ZOMBIE or not cmd:
            continue
        if "qemu-storage-daemon" in os.path.basename(cmd[0]) and any(
            str(directory) in arg for arg in cmd
        ):
            found.append(proc.pid)
    return found


def leftovers(directory: Path) -> dict[str, list]:
    """Everything still attached that belongs under ``directory`` (empty lists when clean)."""
    return {
        "loops": loops_under(directory),
        "mounts": mounts_under(directory),
        "storage_daemons": storage_daemons_under(directory),
    }


def is_clean(directory: Path) -> bool:
    return not any(leftovers(directory).values())
