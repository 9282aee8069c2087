"""Paths inside a mounted guest, resolved the way the guest would resolve them.

The guest's files are untrusted: an absolute symlink such as ``/etc/fstab -> /etc/shadow``
must mean the *guest's* shadow file, never the agent's. Every path is resolved component by
component with symlinks interpreted relative to the guest root, so the result always lies
inside the mounted tree.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

MAX_SYMLINKS = 40


class GuestPathError(Exception):
    """A guest path cannot be resolved inside the guest (a symlink loop, a file as a dir)."""


class GuestRoot:
    """The guest's ``/`` mounted at ``host_root`` on the agent."""

    def __init__(self, host_root: Path) -> None:
        self.host_root = host_root

    def resolve(self, guest_path: str) -> Path:
        """The host path of ``guest_path`` (absolute, in guest terms); it may not exist.

        Raises:
            GuestPathError: too many symlinks, or a component that is not a directory.
        """
        parts = list(PurePosixPath("/", guest_path).parts[1:])
        resolved: list[str] = []
        links = 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            host = self.host_root.joinpath(*resolved, part)
            try:
                mode = os.lstat(host).st_mode
            except FileNotFoundError:
                resolved.append(part)
                continue
            if stat.S_ISLNK(mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise GuestPathError(f"{guest_path}: too many levels of symbolic links")
                target = os.readlink(host)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in PurePosixPath(target).parts if p != "/"] + parts
                continue
            if parts and not stat.S_ISDIR(mode):
                raise GuestPathError(f"{guest_path}: /{'/'.join([*resolved, part])} is not a dir")
            resolved.append(part)
        return self.host_root.joinpath(*resolved)

    def guest_name(self, host_path: Path) -> str:
        """The guest's name for a resolved host path (for reports)."""
        return "/" + str(host_path.relative_to(self.host_root)).removeprefix(".")

    def read_text(self, guest_path: str) -> str | None:
        """A regular file's text (undecodable bytes replaced), or None when absent."""
        path = self.resolve(guest_path)
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return None
            return path.read_text(errors="surrogateescape")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, guest_path: str) -> bool:
        try:
            return os.path.lexists(self.resolve(guest_path))
        except GuestPathError:
            return False

    def is_dir(self, guest_path: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self.resolve(guest_path)).st_mode)
        except (OSError, GuestPathError):
            return False

    def glob(self, directory: str, pattern: str) -> list[str]:
        """Guest paths of the entries of ``directory`` matching ``pattern``, sorted."""
        try:
            host_dir = self.resolve(directory)
        except GuestPathError:
            return []
        if not self.is_dir(directory):
            return []
        base = directory.rstrip("/")
        return sorted(f"{base}/{entry.name}" for entry in host_dir.glob(pattern))

    def parent_resolved(self, guest_path: str) -> Path:
        """The host path of ``guest_path`` with its directory resolved but not its last part.

        For acting on a symlink itself (remove it, replace it) rather than on its target.
        """
        pure = PurePosixPath("/", guest_path)
        return self.resolve(str(pure.parent)) / pure.name
