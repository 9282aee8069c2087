"""Mounting file systems (and bind mounts for a chroot), always released in reverse order;
trimming a mounted file system."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from agent import proc
from agent.disk.cleanup import release_fully
from agent.disk.journal import AttachmentJournal
from agent.errors import ToolFailed

log = logging.getLogger(__name__)

MOUNT_TIMEOUT = 120.0
UMOUNT_TIMEOUT = 120.0
UMOUNT_ATTEMPTS = 5
UMOUNT_RETRY_SECONDS = 0.2
MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out = []
    i = 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Every mount point of this process's mount namespace, in mount order."""
    points = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(Path(_unescape(fields[4])))
    return points


def _canonical(target: Path) -> Path:
    # mountinfo shows resolved paths; resolve only the parent, since the target itself may be
    # a dead FUSE mount that cannot be looked at.
    return Path(os.path.realpath(target.parent)) / target.name


def is_mounted(target: Path) -> bool:
    return _canonical(target) in mount_points()


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, deepest last (release them in reverse)."""
    return [p for p in mount_points() if p == directory or p.is_relative_to(directory)]


def unmount(target: Path) -> None:
    """Unmount ``target`` (blocking). Retries while busy, then detaches it lazily.

    Does nothing when nothing is mounted there.
    """
    for attempt in range(UMOUNT_ATTEMPTS):
        if not is_mounted(target):
            return
        try:
            proc.run_sync(["umount", str(target)], timeout=UMOUNT_TIMEOUT)
            return
        except proc.CommandError as exc:
            log.warning("umount failed target=%s attempt=%d error=%s", target, attempt + 1, exc)
            time.sleep(UMOUNT_RETRY_SECONDS)  # a release step in a thread: brief back-off
    if is_mounted(target):
        # Still busy: detach it from the tree so nothing new can use it; the kernel frees it
        # when the last user goes.
        proc.run_sync(["umount", "--lazy", str(target)], timeout=UMOUNT_TIMEOUT)
        log.warning("lazily unmounted busy target=%s", target)


@contextlib.asynccontextmanager
async def mounted(
    source: str,
    target: Path,
    journal: AttachmentJournal,
    *,
    fstype: str | None = None,
    options: Sequence[str] = (),
    bind: bool = False,
) -> AsyncIterator[Path]:
    """Mount ``source`` on ``target`` for the body; unmounted on every way out.

    Raises:
        ToolFailed: mount failed.
    """
    argv = ["mount"]
    if bind:
        argv.append("--bind")
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    argv += [source, str(target)]
    record = journal.add({"kind": "mount", "target": str(target)})
    try:
        try:
            await proc.run(argv, timeout=MOUNT_TIMEOUT)
        except proc.CommandError as exc:
            raise ToolFailed(f"mount {source} on {target}: {exc}") from exc
        yield target
    finally:
        await release_fully(lambda: unmount(target))
        journal.remove(record)


TRIM_TIMEOUT = 1800.0
_TRIMMED = re.compile(r"\((\d+) bytes\) trimmed")


async def trim(target: Path, *, timeout: float = TRIM_TIMEOUT) -> int:
    """Discard the free space of the file system mounted at ``target`` (``fstrim -v``).

    Returns:
        The bytes the file system handed back (its free space, as fstrim reports it).

    Raises:
        ToolFailed: fstrim failed (the device takes no discards, say) or said nothing.
    """
    argv = ["fstrim", "--verbose", str(target)]
    try:
        result = await proc.run(argv, timeout=timeout, capture_stdout=True)
    except proc.CommandError as exc:
        raise ToolFailed(f"fstrim {target}: {exc}") from exc
    match = _TRIMMED.search(result.stdout)
    if match is None:
        raise ToolFailed(f"fstrim {target}: no byte count in its output {result.stdout.strip()!r}")
    return int(match.group(1))
