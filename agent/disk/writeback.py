"""Early write-back of an output file while a tool is still writing it.

qemu-img writes its target through the page cache and never flushes it (cache mode
``unsafe``); the agent fsyncs the finished file before renaming it. For an image smaller than
the kernel's dirty-page limits nothing reaches the disk before that fsync, so the conversion
(CPU and memory copies) and the disk writes run one after the other: on the benchmark machine
the final fsync of an 860 MB output took 0.3-0.45 s after a 0.8 s conversion.

While the tool runs, :func:`early_writeback` asks the kernel every ``interval`` seconds to
start writing what is dirty so far (``sync_file_range(SYNC_FILE_RANGE_WRITE)``: asynchronous,
it waits for nothing). The two then overlap and the fsync finds little left. The written pages
stay cached: the agent hashes the finished output right after (its sha256 is published with
it), and reading it back from the page cache is a CPU pass where reading it from disk took
longer than the conversion (4 GiB VMDK, bench/last_mile.py: +4 s). Once the output is hashed
and committed, :func:`drop_cached` lets its (then clean) pages go, so a large conversion does
not leave the node's page cache full of it. Durability is unchanged: the fsync before the
rename is still the one durability point. It is a hint: on a file system without write-back
(tmpfs) it does nothing, and an error only stops the hints, never the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import cast

log = logging.getLogger(__name__)

WRITEBACK_INTERVAL = 0.1


SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start write-back of dirty pages, wait for nothing


def _sync_file_range() -> Callable[..., int] | None:
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux (or no such symbol in the C library)
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return cast(Callable[..., int], call)


_SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int) -> None:
    """Start asynchronous write-back of a file's dirty pages; they stay cached.

    Without ``sync_file_range`` (not Linux) it falls back to ``POSIX_FADV_DONTNEED``, which
    starts write-back too but also drops the pages already clean.

    Raises:
        OSError: the descriptor does not support it (a pipe).
    """
    if _SYNC_FILE_RANGE is None:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return
    if _SYNC_FILE_RANGE(fd, 0, 0, SYNC_FILE_RANGE_WRITE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def drop_cached(fd: int) -> None:
    """Let the kernel drop a file's clean cached pages (after it was hashed and synced).

    A hint: an error is logged, never raised (the output is already complete).
    """
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as exc:
        log.debug("cached pages not dropped error=%s", exc)


async def _hint_until_stopped(fd: int, stop: asyncio.Event, interval: float, job_id: str) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            # Starting write-back can block on the block device's queue: not on the loop.
            await asyncio.to_thread(start_writeback, fd)
        except OSError as exc:
            log.warning("early write-back stopped job_id=%s error=%s", job_id, exc)
            return


@contextlib.asynccontextmanager
async def early_writeback(
    fd: int, job_id: str, interval: float = WRITEBACK_INTERVAL
) -> AsyncIterator[None]:
    """While the body runs, start write-back of ``fd``'s file every ``interval`` seconds.

    On the way out it waits for a hint in flight, so ``fd`` may be closed right after.
    """
    stop = asyncio.Event()
    task = asyncio.create_task(_hint_until_stopped(fd, stop, interval, job_id))
    try:
        yield
    finally:
        stop.set()
        await task
