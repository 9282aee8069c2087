"""Early write-back of an output file while a tool is still writing it.

qemu-img writes its target through the page cache and never flushes it (cache mode
``unsafe``); the agent fsyncs the finished file before renaming it. For an image smaller than
the kernel's dirty-page limits nothing reaches the disk before that fsync, so the conversion
(CPU and memory copies) and the disk writes run one after the other: on the benchmark machine
the final fsync of an 860 MB output took 0.3-0.45 s after a 0.8 s conversion.

While the tool runs, :func:`early_writeback` asks the kernel every ``interval`` seconds to
start writing what is dirty so far (``posix_fadvise(POSIX_FADV_DONTNEED)`` starts asynchronous
write-back of the dirty pages and drops pages that are already clean, so a large conversion
also stops filling the node's page cache). The two then overlap and the fsync finds little
left. Durability is unchanged: the fsync before the rename is still the one durability point.
It is a hint: on a file system without write-back (tmpfs) it does nothing, and an error only
stops the hints, never the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)

WRITEBACK_INTERVAL = 0.25


def start_writeback(fd: int) -> None:
    """Start asynchronous write-back of a file's dirty pages; drop its clean cached pages.

    Raises:
        OSError: the descriptor does not support it (a pipe).
    """
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


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
