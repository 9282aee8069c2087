"""Path policy: the agent only reads and writes where its operator allowed it.

Every path from a job spec is resolved with symlinks followed *before* it is compared with the
allow-lists, so ``..`` segments and symlinks pointing out of an allowed directory are refused.

A check on a path name is not enough when someone can change the directory between the check
and the use (time of check / time of use). Files that matter are therefore *pinned*: opened
with ``O_NOFOLLOW``, the open descriptor checked again (``fstat`` and the path the kernel
reports in ``/proc/self/fd``), and handed to tools as ``/proc/<agent pid>/fd/<n>``. Opening
that magic link reaches the inode the agent checked, whatever the name points at by then.
Outputs are created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so nothing is written through a
symlink planted at the output name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import InputNotFound, PathNotAllowed

log = logging.getLogger(__name__)


def _resolve(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _is_under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _describe(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots) or "none configured"


class PathPolicy:
    """The allowed input and output directories of this agent."""

    def __init__(self, allow_input: Sequence[Path | str], allow_output: Sequence[Path | str]):
        self.allow_input = [_resolve(p) for p in allow_input]
        self.allow_output = [_resolve(p) for p in allow_output]

    def check_input(self, path: str | Path, field: str = "image.path") -> Path:
        """Resolve an input image path and check it may be read.

        Returns:
            The resolved path (use it, not the original, from here on).

        Raises:
            PathNotAllowed: outside the allowed input directories, or not a regular file.
            InputNotFound: the file does not exist.
        """
        resolved = _resolve(path)
        if not _is_under(resolved, self.allow_input):
            shown = f"{path} (resolves to {resolved})" if str(resolved) != str(path) else path
            raise PathNotAllowed(
                f"{field}: {shown} is outside the allowed input directories "
                f"({_describe(self.allow_input)})"
            )
        try:
            mode = resolved.stat().st_mode
        except FileNotFoundError:
            raise InputNotFound(f"{field}: {path} does not exist") from None
        except OSError as exc:
            raise InputNotFound(f"{field}: {path} cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(mode):
            raise PathNotAllowed(f"{field}: {path} is not a regular file ({_file_kind(mode)})")
        return resolved

    def check_output_dir(self, path: str | Path, field: str = "artifacts.output_path") -> Path:
        """Resolve an output directory and check it may be written.

        Raises:
            PathNotAllowed: outside the allowed output directories, missing, or not a directory.
        """
        resolved = _resolve(path)
        if not _is_under(resolved, self.allow_output):
            shown = f"{path} (resolves to {resolved})" if str(resolved) != str(path) else path
            raise PathNotAllowed(
                f"{field}: {shown} is outside the allowed output directories "
                f"({_describe(self.allow_output)})"
            )
        if not resolved.exists():
            raise PathNotAllowed(f"{field}: {path} does not exist (create the directory first)")
        if not resolved.is_dir():
            raise PathNotAllowed(f"{field}: {path} is not a directory")
        return resolved

    def check_inside_output_dir(
        self, path: str | Path, output_dir: Path, field: str = "image.path"
    ) -> Path:
        """Resolve a path that must name something inside a checked output directory.

        The path need not exist (an internal migration job names a staged output with it).

        Returns:
            The resolved path.

        Raises:
            PathNotAllowed: it resolves outside ``output_dir`` (or to the directory itself).
        """
        resolved = _resolve(path)
        if resolved == output_dir or not resolved.is_relative_to(output_dir):
            shown = f"{path} (resolves to {resolved})" if str(resolved) != str(path) else path
            raise PathNotAllowed(
                f"{field}: {shown} is not inside the job's output directory {output_dir}"
            )
        return resolved

    def check_output_file(self, output: Path, source: Path) -> Path:
        """Check a file the agent is about to create inside a checked output directory.

        Raises:
            PathNotAllowed: the output would overwrite the source image, or escapes the
                allowed output directories (a symlink planted at the output name).
        """
        resolved = _resolve(output)
        if resolved == _resolve(source):
            raise PathNotAllowed(
                f"artifacts.output_path: the output {output} would overwrite the input image"
            )
        if not _is_under(resolved, self.allow_output):
            raise PathNotAllowed(
                f"artifacts.output_path: {output} resolves to {resolved}, outside the allowed "
                f"output directories ({_describe(self.allow_output)})"
            )
        return output

    def check_existing_output(self, path: str | Path, field: str) -> Path:
        """Check a file the agent already wrote (and will write again) in an output directory.

        The name must not be a symlink: an existing output is only ever reached by its own
        name, so a link planted there is refused rather than followed.

        Returns:
            The resolved path.

        Raises:
            PathNotAllowed: outside the allowed output directories, missing, a symlink or not
                a regular file.
        """
        resolved = _resolve(path)
        if not _is_under(resolved, self.allow_output):
            shown = f"{path} (resolves to {resolved})" if str(resolved) != str(path) else path
            raise PathNotAllowed(
                f"{field}: {shown} is outside the allowed output directories "
                f"({_describe(self.allow_output)})"
            )
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise PathNotAllowed(f"{field}: {path} does not exist") from None
        except OSError as exc:
            raise PathNotAllowed(f"{field}: {path} cannot be read: {exc.strerror}") from None
        if stat.S_ISLNK(mode):
            raise PathNotAllowed(f"{field}: {path} is a symlink; refused")
        if not stat.S_ISREG(mode):
            raise PathNotAllowed(f"{field}: {path} is not a regular file ({_file_kind(mode)})")
        return resolved


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


@dataclass(frozen=True)
class PinnedFile:
    """An open, checked file: tools get :attr:`tool_path`, which cannot be swapped."""

    path: Path  # the resolved path that was checked (for messages)
    fd: int
    st: os.stat_result

    @property
    def tool_path(self) -> Path:
        """A path a child process opens to reach exactly this inode."""
        return Path(f"/proc/{os.getpid()}/fd/{self.fd}")


def _fd_path(fd: int) -> Path:
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def _open_nofollow(path: Path, flags: int, field: str, mode: int = 0o600) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathNotAllowed(
                f"{field}: {path} became a symlink after it was checked; refused"
            ) from None
        if exc.errno == errno.EEXIST:
            raise PathNotAllowed(f"{field}: {path} already exists; refused to write") from None
        if exc.errno == errno.ENOENT:
            raise InputNotFound(f"{field}: {path} does not exist") from None
        raise PathNotAllowed(f"{field}: {path} cannot be opened: {exc.strerror}") from None


def _verify_fd(fd: int, expected: Path, roots: Sequence[Path], field: str) -> None:
    """The descriptor is a regular file at ``expected``, inside ``roots``, or PathNotAllowed."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise PathNotAllowed(
            f"{field}: {expected} is not a regular file ({_file_kind(st.st_mode)})"
        )
    actual = _fd_path(fd)
    if actual != expected or not _is_under(actual, roots):
        raise PathNotAllowed(
            f"{field}: {expected} was replaced after it was checked (now {actual}); refused"
        )


@contextlib.contextmanager
def pinned_input(
    policy: PathPolicy, path: str | Path, field: str = "image.path"
) -> Iterator[PinnedFile]:
    """Check an input path, open it without following a final symlink, and verify the fd.

    Raises:
        PathNotAllowed: outside the allow-list, not a regular file, or swapped after the check.
        InputNotFound: it does not exist.
    """
    resolved = policy.check_input(path, field)
    # O_NONBLOCK: a FIFO swapped in after the check must not hang the open.
    fd = _open_nofollow(resolved, os.O_RDONLY | os.O_NONBLOCK, field)
    try:
        _verify_fd(fd, resolved, policy.allow_input, field)
        yield PinnedFile(resolved, fd, os.fstat(fd))
    finally:
        close_in_background(fd)


def close_in_background(fd: int) -> None:
    """Close a descriptor without blocking the caller (the event loop).

    Closing a file on a share that stopped answering (a hung NFS server, a stopped FUSE
    daemon) waits for the server's flush; done inline it would freeze the whole agent,
    heartbeats included. The descriptor number is released at once either way.
    """
    threading.Thread(target=_close_quietly, args=(fd,), name=f"close-{fd}", daemon=True).start()


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as exc:
        log.warning("closing an input failed fd=%d error=%s", fd, exc)


@contextlib.contextmanager
def pinned_output(
    policy: PathPolicy, path: Path, field: str = "artifacts.output_path"
) -> Iterator[PinnedFile]:
    """Create a new, empty output file; never through a symlink, never over an existing file.

    Raises:
        PathNotAllowed: something exists at ``path``, or the directory escaped the allow-list.
    """
    directory = Path(os.path.realpath(path.parent))
    if not _is_under(directory, policy.allow_output):
        raise PathNotAllowed(
            f"{field}: {path.parent} resolves to {directory}, outside the allowed output "
            f"directories ({_describe(policy.allow_output)})"
        )
    target = directory / path.name
    fd = _open_nofollow(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, field)
    try:
        _verify_fd(fd, target, policy.allow_output, field)
        yield PinnedFile(target, fd, os.fstat(fd))
    finally:
        os.close(fd)


@contextlib.contextmanager
def pinned_existing_output(
    policy: PathPolicy, path: str | Path, field: str, *, writable: bool
) -> Iterator[PinnedFile]:
    """Check an existing output file, open it without following a symlink, verify the fd.

    Raises:
        PathNotAllowed: see :meth:`PathPolicy.check_existing_output`, or swapped after the
            check.
    """
    resolved = policy.check_existing_output(path, field)
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NONBLOCK
    try:
        fd = _open_nofollow(resolved, flags, field)
    except InputNotFound as exc:
        raise PathNotAllowed(exc.message) from None
    try:
        _verify_fd(fd, resolved, policy.allow_output, field)
        yield PinnedFile(resolved, fd, os.fstat(fd))
    finally:
        os.close(fd)
