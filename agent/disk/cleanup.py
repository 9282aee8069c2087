"""Release steps that run to their end even when the job is cancelled meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def release_fully(step: Callable[[], None]) -> None:
    """Run a blocking release step in a thread and wait for it, whatever happens.

    A release step (unmount, detach a loop device, stop a daemon) that is abandoned half-way
    leaves the node dirty, so a cancellation that arrives meanwhile is held back until the step
    has finished and re-raised afterwards.

    Raises:
        asyncio.CancelledError: the caller was cancelled while the step ran (after it ended).
        Exception: whatever the step raised.
    """
    task = asyncio.ensure_future(asyncio.to_thread(step))
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                cancelled = True
        except Exception:
            break
    if cancelled:
        task.exception()  # retrieved, so a failure here is not reported as unhandled
        raise asyncio.CancelledError
    task.result()
