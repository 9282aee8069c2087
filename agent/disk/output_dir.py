"""File operations on names inside one checked output directory, never through a symlink.

A migration's publish and cleanup jobs work on plain file names in the output directory. The
directory is opened once (``O_DIRECTORY | O_NOFOLLOW``) and verified like a pinned file; every
later call works relative to that descriptor, so swapping the directory (or a parent) for a
symlink after the check changes nothing. Names are never followed: ``lstat``, ``O_NOFOLLOW``
opens, and :meth:`OutputDir.move`, which never replaces an existing name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from agent.errors import OutputExists, PathNotAllowed
from agent.paths import PathPolicy

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
# link() is refused by some file systems; then move falls back to a checked rename.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK})


class OutputDir:
    """An open output directory; every name is a plain file name inside it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def lstat(self, name: str) -> os.stat_result | None:
        """The name's own status (a symlink is not followed), or None when it is absent."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open_regular(self, name: str) -> int:
        """Open an existing regular file for reading, without following a symlink.

        Raises:
            PathNotAllowed: the name is a symlink, a directory or another non-regular file.
            FileNotFoundError: the name does not exist.
        """
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise PathNotAllowed(f"{self.path / name} is not a regular file") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PathNotAllowed(f"{self.path / name} is not a regular file")
        return fd

    def move(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target`` unless ``target`` exists, then fsync the directory.

        A hard link followed by an unlink never replaces an existing target (``rename``
        would). A crash between the two leaves both names on one inode, which
        :meth:`finish_move` completes.

        Raises:
            OutputExists: ``target`` exists.
            OSError: the file system refused.
        """
        try:
            os.link(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
        except FileExistsError:
            raise OutputExists(f"{self.path / target} already exists") from None
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            if self.lstat(target) is not None:
                raise OutputExists(f"{self.path / target} already exists") from None
            os.rename(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            os.unlink(source, dir_fd=self.fd)
        self.fsync()

    def same_file(self, first: str, second: str) -> bool:
        """Both names exist and are one inode (a move interrupted between link and unlink)."""
        a, b = self.lstat(first), self.lstat(second)
        return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def finish_move(self, source: str, target: str) -> None:
        """Complete an interrupted :meth:`move` (both names on one inode)."""
        if self.same_file(source, target):
            os.unlink(source, dir_fd=self.fd)
            self.fsync()

    def unlink(self, name: str) -> None:
        """Remove a name (a symlink itself, never what it points at), then fsync."""
        os.unlink(name, dir_fd=self.fd)
        self.fsync()

    def write_atomically(self, name: str, data: bytes, tmp_name: str) -> None:
        """Write ``data`` to ``tmp_name`` (new, never through a symlink), fsync it, rename it
        to ``name`` (replacing what is there), fsync the directory."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name, dir_fd=self.fd)  # a stale one from an earlier attempt
        fd = os.open(tmp_name, flags, 0o644, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb", closefd=False) as handle:
                handle.write(data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=self.fd)
            raise
        os.close(fd)
        os.rename(tmp_name, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        self.fsync()

    def fsync(self) -> None:
        os.fsync(self.fd)

    def tool_path(self, fd: int) -> Path:
        """The path a child process opens to reach exactly the file open at ``fd``."""
        return Path(f"/proc/{os.getpid()}/fd/{fd}")


@contextlib.contextmanager
def opened_output_dir(policy: PathPolicy, checked: Path) -> Iterator[OutputDir]:
    """Open a directory already checked by :meth:`PathPolicy.check_output_dir`, verified.

    Raises:
        PathNotAllowed: it was replaced after the check, or left the allowed directories.
    """
    field = "artifacts.output_path"
    try:
        fd = os.open(checked, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PathNotAllowed(f"{field}: {checked} cannot be opened: {exc.strerror}") from None
    try:
        actual = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if actual != checked or not any(actual.is_relative_to(r) for r in policy.allow_output):
            raise PathNotAllowed(
                f"{field}: {checked} was replaced after it was checked (now {actual}); refused"
            )
        yield OutputDir(checked, fd)
    finally:
        os.close(fd)
