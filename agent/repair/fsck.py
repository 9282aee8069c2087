"""fs_check: each guest file system checked (and repaired) with its own tool, unmounted.

e2fsck exit codes: 0 clean, 1 errors corrected, 2 corrected and a reboot is needed, 4 errors
left, 8+ operational failure. xfs_repair: 0 clean (or repaired), 1 corruption found (``-n``),
2 a dirty log that only mounting can replay. A dry run only looks (``-n``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agent import proc
from agent.disk.attach import AttachedPartition

FSCK_TIMEOUT = 3600.0


@dataclass(frozen=True)
class FsckResult:
    partition: int
    fstype: str | None
    tool: str
    result: str  # clean, repaired, errors_found, errors_left, failed, skipped
    exit_code: int | None
    detail: str
    seconds: float
    disk: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "disk": self.disk,
            "partition": self.partition,
            "fstype": self.fstype,
            "tool": self.tool,
            "result": self.result,
            "exit_code": self.exit_code,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


def fsck_argv(fstype: str, device: str, repair: bool) -> list[str] | None:
    if fstype in ("ext2", "ext3", "ext4"):
        return ["e2fsck", "-f", "-p" if repair else "-n", device]
    if fstype == "xfs":
        return ["xfs_repair", device] if repair else ["xfs_repair", "-n", device]
    if fstype == "vfat" and proc.which("fsck.vfat"):
        return ["fsck.vfat", "-a" if repair else "-n", device]
    return None


def _meaning(tool: str, code: int, repair: bool) -> str:
    if code == 0:
        return "clean"
    if tool == "e2fsck":
        if code in (1, 2):
            return "repaired" if repair else "errors_found"
        return "errors_left" if code == 4 else "failed"
    if tool == "xfs_repair":
        if code == 1 and not repair:
            return "errors_found"
        return "failed"
    return "repaired" if repair and code == 1 else "failed"


async def check_filesystem(partition: AttachedPartition, *, repair: bool) -> FsckResult:
    """Check one unmounted file system; never raises for what the tool reports."""
    started = time.monotonic()
    argv = fsck_argv(partition.fstype or "", partition.device, repair)
    if argv is None:
        what = partition.fstype or "no file system"
        return FsckResult(
            partition.number,
            partition.fstype,
            "",
            "skipped",
            None,
            f"{what}: no checker",
            0.0,
            partition.disk,
        )
    try:
        result = await proc.run(argv, timeout=FSCK_TIMEOUT, capture_stdout=True)
        code, detail = 0, (result.stdout.strip().splitlines() or [""])[-1]
    except proc.CommandFailed as exc:
        code, detail = exc.exit_code, exc.stderr_tail.strip()
    except proc.CommandTimeout as exc:
        code, detail = -1, str(exc)
    meaning = _meaning(argv[0], code, repair) if code >= 0 else "failed"
    if argv[0] == "xfs_repair" and code == 2:
        detail = "the log is dirty: mount the file system once to replay it; " + detail
    return FsckResult(
        partition.number,
        partition.fstype,
        argv[0],
        meaning,
        code,
        detail[-2000:],
        time.monotonic() - started,
        partition.disk,
    )
