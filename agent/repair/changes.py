"""Every change a repair makes to guest files goes through here: applied, or only recorded.

In a dry run nothing is written; the same records (with unified diffs) say what would change.
Writes keep the file's mode and owner and are atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.repair.guestfs import GuestRoot

MAX_DIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class FileChange:
    action: str
    path: str  # in guest terms
    change: str  # "modified", "created", "removed", "symlink"
    diff: str | None = None
    detail: str = ""

    def describe(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"action": self.action, "path": self.path, "change": self.change}
        if self.diff is not None:
            doc["diff"] = self.diff
        if self.detail:
            doc["detail"] = self.detail
        return doc


def unified_diff(path: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a{path}",
        tofile=f"b{path}",
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if len(text) > MAX_DIFF_BYTES:
        return text[:MAX_DIFF_BYTES] + "\n... (diff truncated)\n"
    return text


class ChangeSet:
    """The changes of one repair, on one mounted guest."""

    def __init__(self, root: GuestRoot, *, dry_run: bool) -> None:
        self.root = root
        self.dry_run = dry_run
        self.changes: list[FileChange] = []

    def for_action(self, action: str) -> list[FileChange]:
        return [c for c in self.changes if c.action == action]

    def write_text(self, action: str, guest_path: str, new: str) -> bool:
        """Replace (or create) a text file; returns False when it already had this content."""
        host = self.root.resolve(guest_path)
        old = self.root.read_text(guest_path)
        if old == new:
            return False
        change = "created" if old is None else "modified"
        self.changes.append(
            FileChange(action, guest_path, change, unified_diff(guest_path, old or "", new))
        )
        if not self.dry_run:
            _write_atomically(host, new.encode(errors="surrogateescape"))
        return True

    def record(self, action: str, guest_path: str, change: str, detail: str) -> None:
        """Record a change made by a tool rather than through this set (an unmounted ESP)."""
        self.changes.append(FileChange(action, guest_path, change, None, detail))

    def copy_file(self, action: str, source: str, guest_path: str) -> bool:
        """Create ``guest_path`` as a copy of the guest's file ``source`` (binary, no diff)."""
        data = self.root.resolve(source).read_bytes()
        host = self.root.resolve(guest_path)
        if host.exists() and host.read_bytes() == data:
            return False
        change = "modified" if host.exists() else "created"
        self.changes.append(FileChange(action, guest_path, change, None, f"copy of {source}"))
        if not self.dry_run:
            _write_atomically(host, data)
        return True

    def remove(self, action: str, guest_path: str, detail: str = "") -> bool:
        """Remove a file or symlink; returns False when there is nothing there."""
        host = self.root.parent_resolved(guest_path)
        try:
            mode = os.lstat(host).st_mode
        except FileNotFoundError:
            return False
        diff = None
        if stat.S_ISLNK(mode):
            detail = detail or f"symlink to {os.readlink(host)}"
        elif stat.S_ISREG(mode):
            old = host.read_bytes()
            if b"\0" not in old:
                diff = unified_diff(guest_path, old.decode(errors="surrogateescape"), "")
        else:
            raise IsADirectoryError(f"{guest_path} is not a file")
        self.changes.append(FileChange(action, guest_path, "removed", diff, detail))
        if not self.dry_run:
            host.unlink()
        return True

    def symlink(self, action: str, guest_path: str, target: str, detail: str = "") -> bool:
        """Make ``guest_path`` a symlink to ``target``; returns False when it already is."""
        host = self.root.parent_resolved(guest_path)
        with contextlib.suppress(OSError):
            if os.readlink(host) == target:
                return False
        if os.path.lexists(host) and not os.path.islink(host):
            raise FileExistsError(f"{guest_path} exists and is not a symlink")
        self.changes.append(
            FileChange(action, guest_path, "symlink", None, detail or f"-> {target}")
        )
        if not self.dry_run:
            host.parent.mkdir(parents=True, exist_ok=True)
            tmp = host.with_name(f".{host.name}.h2k-tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(target, tmp)
            os.replace(tmp, host)
        return True


def _write_atomically(host: Path, data: bytes) -> None:
    try:
        st: os.stat_result | None = os.stat(host)
    except FileNotFoundError:
        st = None
    host.parent.mkdir(parents=True, exist_ok=True)
    tmp = host.with_name(f".{host.name}.h2k-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if st is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, host)
