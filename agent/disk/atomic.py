"""Output files that appear at their final path only when complete.

Write to a hidden temporary name in the same directory, fsync it, rename it into place, fsync
the directory. On any failure or cancellation the temporary file is removed. Temporary paths
are recorded in a journal under the agent's state directory so that a restarted agent can
remove what a crash left behind (:func:`remove_leftovers`).

The temporary name carries the job, the node and the attempt (``.<final>.h2k-tmp-<job id>.
<node>.<attempt>``, set by the executor with :func:`writing_as`), so two agents sharing an
output directory (NFS) and two attempts of one job never write the same temporary file.

A committed output can carry an :class:`OutputRecord` (an extended attribute set before the
rename, so the name never appears without it): which job, attempt and node wrote it, its size
and its sha256. A retry that finds the previous attempt's complete output proves it is the same
file with :func:`proven_output` (the record, then the content hashed again) instead of failing
with OUTPUT_EXISTS.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.disk.digest import sha256_of_fd
from agent.errors import OutOfSpace

log = logging.getLogger(__name__)

JOURNAL_DIR = "inflight"
TEMPORARY_MARKER = ".h2k-tmp-"
NAME_MAX = 255
# trusted.* can only be set by root (the agent): a user who can write the output directory
# cannot forge a record there. File systems without it (NFS) get user.*.
RECORD_ATTRIBUTES = ("trusted.h2k.output", "user.h2k.output")


@dataclass(frozen=True)
class Writer:
    """Who writes this task's outputs: the agent's node name and the job's attempt."""

    node: str
    attempt: int


_writer: ContextVar[Writer | None] = ContextVar("h2k_output_writer", default=None)


@contextlib.contextmanager
def writing_as(node: str, attempt: int) -> Iterator[None]:
    """Name every temporary output written in this context after ``node`` and ``attempt``."""
    token = _writer.set(Writer(node, attempt))
    try:
        yield
    finally:
        _writer.reset(token)


def current_writer() -> Writer | None:
    return _writer.get()


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(final: Path, job_id: str, writer: Writer | None = None) -> Path:
    """``.<final>.h2k-tmp-<job id>[.<node>.<attempt>]``; a suffix too long for a file name
    becomes its digest (the ``.<final>.h2k-tmp-`` prefix stays: cleanup looks for it)."""
    writer = writer or current_writer()
    suffix = job_id if writer is None else f"{job_id}.{writer.node}.{writer.attempt}"
    prefix = f".{final.name}{TEMPORARY_MARKER}"
    if len(prefix) + len(suffix) > NAME_MAX:
        suffix = hashlib.sha256(suffix.encode()).hexdigest()[:32]
    return final.with_name(prefix + suffix)


@dataclass(frozen=True)
class OutputRecord:
    """What a committed output carries about its making (see the module docstring)."""

    job_id: str
    attempt: int
    node: str
    spec_sha256: str
    size_bytes: int
    sha256: str
    # The file's mtime when it was hashed: unchanged size and mtime say the digest still holds.
    mtime_ns: int = 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> OutputRecord | None:
        try:
            doc = json.loads(data)
            return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})
        except (ValueError, KeyError, TypeError):
            return None


def attach_record(fd: int, record: OutputRecord) -> bool:
    """Set the record on an open file; False when the file system keeps no such attribute."""
    for name in RECORD_ATTRIBUTES:
        try:
            os.setxattr(fd, name, record.encode())
            return True
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EPERM, errno.ENOTSUP):
                raise
    return False


def read_record(fd: int) -> OutputRecord | None:
    """The record an open output carries (trusted first), or None."""
    for name in RECORD_ATTRIBUTES:
        try:
            return OutputRecord.decode(os.getxattr(fd, name))
        except OSError:
            continue
    return None


def _journal_entry(state_dir: Path, tmp: Path) -> Path:
    digest = hashlib.sha256(str(tmp).encode()).hexdigest()[:16]
    return state_dir / JOURNAL_DIR / f"{digest}{tmp.name}"


async def proven_output(
    final: Path, job_id: str, spec_sha256: str
) -> tuple[OutputRecord | None, str]:
    """Whether ``final`` is a complete output an earlier attempt of this job published.

    Proven when the file carries a record of this job and spec, still has the recorded size,
    and hashes to the recorded sha256 (read again in full: the record alone is not enough).

    Returns:
        ``(record, "")`` when proven, else ``(None, why not)``.
    """
    try:
        fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return None, f"it cannot be opened ({exc.strerror})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "it is not a regular file"
        record = read_record(fd)
        if record is None:
            return None, "it carries no h2k output record"
        if record.job_id != job_id or record.spec_sha256 != spec_sha256:
            return None, f"it was written by another job ({record.job_id})"
        if record.size_bytes != st.st_size:
            return None, (
                f"it is {st.st_size} bytes, not the {record.size_bytes} attempt "
                f"{record.attempt} wrote"
            )
        digest, _ = await sha256_of_fd(fd)
        if digest != record.sha256:
            return None, f"its content changed since attempt {record.attempt} wrote it"
        return record, ""
    finally:
        os.close(fd)


def recorded_sha256(path: Path) -> str | None:
    """The sha256 an output's record gives, while its size and mtime are what they were
    when it was hashed (a later write, a repair in place, changes the mtime); else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        record = read_record(fd)
    finally:
        os.close(fd)
    if record is None or not record.mtime_ns:
        return None
    if (record.size_bytes, record.mtime_ns) != (st.st_size, st.st_mtime_ns):
        return None
    return record.sha256


class AtomicOutput:
    """A file being written under a temporary name; :meth:`commit` publishes it."""

    def __init__(self, final: Path, job_id: str, state_dir: Path) -> None:
        self.final = final
        self.tmp = temporary_name(final, job_id, current_writer())
        self._journal = _journal_entry(state_dir, self.tmp)
        self.committed = False

    def begin(self) -> None:
        self._journal.parent.mkdir(parents=True, exist_ok=True)
        self._journal.write_text(str(self.tmp))
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()  # a stale one of this attempt (a restarted agent's)

    def sync(self, fd: int | None = None) -> None:
        """fsync the temporary file (through ``fd`` when given, else by its path).

        :meth:`commit` syncs again before the rename, so this is for writing the data out
        early (while something else reads the file); the second fsync then has only what
        changed since (an extended attribute, say) left to do.

        Raises:
            OutOfSpace: the file system had no room for the data still in the page cache.
        """
        try:
            if fd is None:
                fsync_path(self.tmp)
            else:
                os.fsync(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutOfSpace(
                    f"{self.final.parent} filled up while {self.final.name} was synced "
                    f"({exc.strerror}); the partial output was removed"
                ) from None
            raise

    def commit(self) -> None:
        """fsync the temporary file, rename it to the final name, fsync the directory.

        Raises:
            OutOfSpace: the file system had no room for the data still in the page cache.
        """
        self.sync()
        os.replace(self.tmp, self.final)
        fsync_path(self.final.parent)
        self.committed = True

    def discard(self) -> None:
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
        with contextlib.suppress(FileNotFoundError):
            self._journal.unlink()


@contextlib.contextmanager
def atomic_output(final: Path, job_id: str, state_dir: Path) -> Iterator[AtomicOutput]:
    """Yield an :class:`AtomicOutput`; the temporary file is removed unless committed."""
    output = AtomicOutput(final, job_id, state_dir)
    output.begin()
    try:
        yield output
    finally:
        output.discard()


def write_bytes_atomically(final: Path, data: bytes, job_id: str, state_dir: Path) -> None:
    """Write a small file atomically (used for reports)."""
    with atomic_output(final, job_id, state_dir) as output:
        output.tmp.write_bytes(data)
        output.commit()


def inflight_temporaries(state_dir: Path) -> set[Path]:
    """The temporary outputs recorded in the journal: being written by a running job."""
    journal = state_dir / JOURNAL_DIR
    if not journal.is_dir():
        return set()
    found = set()
    for entry in journal.iterdir():
        with contextlib.suppress(OSError):
            found.add(Path(entry.read_text().strip()))
    return found


def remove_leftovers(state_dir: Path) -> list[Path]:
    """Remove temporary outputs a crashed agent left behind; returns what was removed."""
    journal = state_dir / JOURNAL_DIR
    removed: list[Path] = []
    if not journal.is_dir():
        return removed
    for entry in journal.iterdir():
        tmp = Path(entry.read_text().strip())
        if TEMPORARY_MARKER in tmp.name:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
        entry.unlink()
    for tmp in removed:
        log.info("removed leftover temporary output path=%s", tmp)
    return removed
