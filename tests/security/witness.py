"""Evidence that nobody read a file: access times that must not move, FIFOs nobody opened."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path


class AtimeWitness:
    """A file whose access time is set before its modification time.

    With ``relatime`` (and ``strictatime``) the kernel updates the access time on the next
    read whenever it is older than the modification time, so any read moves it; opening
    without reading does not. :meth:`proves_reads_are_seen` checks that on this file system.
    """

    def __init__(self, path: Path, content: bytes | None = b"secret\n" * 1024) -> None:
        """Arm ``path``, first writing ``content`` to it unless that is None."""
        self.path = path
        if content is not None:
            path.write_bytes(content)
        self.arm()

    def arm(self) -> None:
        os.utime(self.path, (1_000_000, time.time()))

    def untouched(self) -> bool:
        return os.stat(self.path).st_atime == 1_000_000

    def proves_reads_are_seen(self) -> bool:
        """Read the file once; True when the access time moved (then re-arm)."""
        self.path.read_bytes()
        seen = not self.untouched()
        self.arm()
        return seen


def fifo_never_opened(path: Path) -> bool:
    """True when nobody holds the FIFO open for reading right now.

    A process that tried to open it for reading would still be blocked in open() (no writer
    ever comes), so after a job has ended this also means nobody tried.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return True
        raise
    os.close(fd)
    return False
