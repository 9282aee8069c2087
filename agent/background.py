"""Work a job starts now and waits for later, so that it costs the job no wall time of its own.

A repair maps the source's data while it attaches and repairs, say: the map's qemu-img runs
while the job waits for other processes. :func:`meanwhile` ties such a task to a block: what
the block did not wait for is cancelled on the way out (a subprocess in it is killed with its
process group by :mod:`agent.proc`), so nothing outlives the block.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


@contextlib.asynccontextmanager
async def meanwhile(work: Coroutine[Any, Any, T], name: str) -> AsyncIterator[asyncio.Task[T]]:
    """Run ``work`` as a task while the body runs; the body awaits the task for its result.

    On the way out a task still running is cancelled and waited for. A failure of a task
    the body never awaited is dropped with it (the body did not need the result).
    """
    task = asyncio.create_task(work, name=name)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: asyncio would otherwise log it as never retrieved


async def together(*works: Coroutine[Any, Any, None]) -> None:
    """Run ``works`` concurrently; the first to fail cancels the rest and its error is raised
    as it is (not wrapped in an ExceptionGroup, so the job's error keeps its type)."""
    tasks = [asyncio.create_task(work) for work in works]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.wait(tasks)
    for task in tasks:  # the failure first: the others were cancelled because of it
        if not task.cancelled() and task.exception() is not None:
            task.result()
