"""Waking up when a queue directory changes: inotify through ctypes, or plain polling.

The intake scans its queues every ``poll_seconds`` whatever happens (inotify does not see
writes made by another host on shared storage); inotify only makes it notice a local drop at
once. Without inotify (no libc symbol, watch limit reached) it polls.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
from pathlib import Path

log = logging.getLogger("intake.watch")

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
WATCH_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE


class Inotify:
    """An inotify instance; raises OSError when the kernel or libc does not offer one."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add_watch.restype = ctypes.c_int
        init = libc.inotify_init1
        init.argtypes = [ctypes.c_int]
        init.restype = ctypes.c_int
        fd = init(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
        self.fd = fd

    def add(self, directory: Path) -> None:
        if self._add_watch(self.fd, os.fsencode(directory), WATCH_MASK) < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), str(directory))

    def drain(self) -> None:
        """Discard the queued events: any event only means "scan now"."""
        while True:
            try:
                if not os.read(self.fd, 65536):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        os.close(self.fd)


class QueueWatcher:
    """Waits until a watched directory changed, ``timeout`` passed, or :meth:`wake` was called
    (from a signal handler: it only writes a byte to a pipe)."""

    def __init__(self, use_inotify: bool = True) -> None:
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._watched: set[Path] = set()
        self.inotify: Inotify | None = None
        if use_inotify:
            try:
                self.inotify = Inotify()
            except (OSError, AttributeError) as error:
                log.warning("inotify unavailable, polling only error=%r", str(error))

    @property
    def mode(self) -> str:
        return "inotify" if self.inotify is not None else "poll"

    def watch(self, directory: Path) -> None:
        if self.inotify is None or directory in self._watched:
            return
        try:
            self.inotify.add(directory)
        except OSError as error:
            log.warning("inotify watch failed, polling it dir=%s error=%r", directory, str(error))
            return
        self._watched.add(directory)

    def wait(self, timeout: float) -> None:
        readers = [self._wake_read]
        if self.inotify is not None:
            readers.append(self.inotify.fd)
        ready, _, _ = select.select(readers, [], [], max(timeout, 0.0))
        if self.inotify is not None and self.inotify.fd in ready:
            self.inotify.drain()
        if self._wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 4096)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"!")

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
