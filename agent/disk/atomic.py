"""Output files that appear at their final path only when complete.

Write to a hidden temporary name in the same directory, fsync it, rename it into place, fsync
the directory. On any failure or cancellation the temporary file is removed. Temporary paths
are recorded in a journal under the agent's state directory so that a restarted agent can
remove what a crash left behind (:func:`remove_leftovers`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from agent.errors import OutOfSpace

log = logging.getLogger(__name__)

JOURNAL_DIR = "inflight"


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(final: Path, job_id: str) -> Path:
    return final.with_name(f".{final.name}.h2k-tmp-{job_id}")


def _journal_entry(state_dir: Path, tmp: Path) -> Path:
    digest = hashlib.sha256(str(tmp).encode()).hexdigest()[:16]
    return state_dir / JOURNAL_DIR / f"{digest}{tmp.name}"


class AtomicOutput:
    """A file being written under a temporary name; :meth:`commit` publishes it."""

    def __init__(self, final: Path, job_id: str, state_dir: Path) -> None:
        self.final = final
        self.tmp = temporary_name(final, job_id)
        self._journal = _journal_entry(state_dir, self.tmp)
        self.committed = False

    def begin(self) -> None:
        self._journal.parent.mkdir(parents=True, exist_ok=True)
        self._journal.write_text(str(self.tmp))
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()  # a stale one from an earlier attempt of this job

    def commit(self) -> None:
        """fsync the temporary file, rename it to the final name, fsync the directory.

        Raises:
            OutOfSpace: the file system had no room for the data still in the page cache.
        """
        try:
            fsync_path(self.tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutOfSpace(
                    f"{self.final.parent} filled up while {self.final.name} was synced "
                    f"({exc.strerror}); the partial output was removed"
                ) from None
            raise
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
        if ".h2k-tmp-" in tmp.name:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
        entry.unlink()
    for tmp in removed:
        log.info("removed leftover temporary output path=%s", tmp)
    return removed
