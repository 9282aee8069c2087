"""Loop devices over a file (or a window of it: one partition by offset and size)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from agent import proc
from agent.disk.cleanup import release_fully
from agent.disk.journal import AttachmentJournal
from agent.errors import ToolFailed

log = logging.getLogger(__name__)

LOSETUP_TIMEOUT = 60.0
SYS_BLOCK = Path("/sys/block")


def backing_file(device: str) -> str | None:
    """The file behind a loop device, or None when it is not attached."""
    name = os.path.basename(device)
    try:
        return (SYS_BLOCK / name / "loop" / "backing_file").read_text().strip()
    except OSError:
        return None


def _offset(device: str) -> int | None:
    try:
        return int((SYS_BLOCK / os.path.basename(device) / "loop" / "offset").read_text())
    except (OSError, ValueError):
        return None


def loops_backed_by(path: Path | str, offset: int | None = None) -> list[str]:
    """Loop devices whose backing file is ``path`` (and that start at ``offset``, if given)."""
    found = []
    for entry in sorted(SYS_BLOCK.glob("loop*")):
        backing = backing_file(entry.name)
        if backing is None or backing.removesuffix(" (deleted)") != str(path):
            continue
        if offset is None or _offset(entry.name) == offset:
            found.append(f"/dev/{entry.name}")
    return found


def detach(device: str, backing: str) -> None:
    """Detach ``device`` if it is still attached to ``backing`` (blocking).

    The check matters after a crash: the device may have been reused by someone else since.
    """
    current = backing_file(device)
    if current is None or current.removesuffix(" (deleted)") != backing:
        return
    proc.run_sync(["losetup", "--detach", device], timeout=LOSETUP_TIMEOUT)


@contextlib.asynccontextmanager
async def loop_device(
    backing: Path,
    journal: AttachmentJournal,
    *,
    offset: int = 0,
    size: int | None = None,
    read_only: bool = False,
    reported_as: Path | None = None,
) -> AsyncIterator[str]:
    """Attach a loop device over ``backing`` (from ``offset``, ``size`` bytes long).

    ``reported_as`` is the name the kernel shows as the backing file when ``backing`` is a
    pinned ``/proc/<pid>/fd/<n>`` path (the file's real path); journal and release use it.

    Yields:
        The device path (``/dev/loopN``).

    Raises:
        ToolFailed: losetup failed.
    """
    argv = ["losetup", "--find", "--show", "--offset", str(offset)]
    if size is not None:
        argv += ["--sizelimit", str(size)]
    if read_only:
        argv.append("--read-only")
    argv.append(str(backing))
    shown = str(reported_as or backing)
    # Recorded before losetup runs: a crash in between leaves a device that recovery finds by
    # its backing file.
    record = journal.add({"kind": "loop", "backing": shown, "offset": offset, "device": None})
    device: str | None = None
    interrupted = True  # until losetup has answered, a device may exist without our knowing
    try:
        try:
            result = await proc.run(argv, timeout=LOSETUP_TIMEOUT, capture_stdout=True)
        except proc.CommandFailed as exc:
            interrupted = False
            raise ToolFailed(f"losetup {backing} offset {offset}: {exc}") from exc
        except proc.CommandError as exc:
            raise ToolFailed(f"losetup {backing} offset {offset}: {exc}") from exc
        interrupted = False
        device = result.stdout.strip()
        journal.update(record, device=device)
        yield device
    finally:
        if device or interrupted:
            await release_fully(lambda: _release(device, shown, offset))
        journal.remove(record)


def _release(device: str | None, backing: str, offset: int) -> None:
    # Without a name (losetup was interrupted, maybe after attaching) find it by file and
    # offset.
    for candidate in [device] if device else loops_backed_by(backing, offset):
        detach(candidate, backing)
