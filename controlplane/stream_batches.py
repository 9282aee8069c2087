"""Reading an agent's event stream in batches, so a busy job costs one store write per batch.

The dispatcher records an agent's events with one store write (and one commit) for
everything that arrived since its previous write: while a write is in flight, a reader task
keeps taking events off the stream. At a low rate every batch is one event (no added wait);
at a high rate batches grow until the writes keep up. The reader stops reading (and gRPC flow
control holds the agent back) when :data:`MAX_PENDING` events wait unrecorded.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType

from protocol.gen.h2k.v1 import job_pb2

# At most this many events go into one store write ...
MAX_BATCH = 1000
# ... and the reader pauses while this many wait to be recorded (2 s at 1,000 events/s; a
# bound on the memory a job whose store writes lag can hold, ~1 MiB).
MAX_PENDING = 2000


class StreamBatches:
    """``async with StreamBatches(call) as batches: async for events in batches: ...``

    Each batch is every event that arrived since the previous one (at least one, at most
    :data:`MAX_BATCH`), in stream order. When the stream fails, the events that arrived
    before the failure are handed out first, then its error is raised. Leaving the ``with``
    block stops the reader, which cancels the call if it was still open.
    """

    def __init__(self, call: AsyncIterator[job_pb2.ProgressEvent]) -> None:
        self._call = call
        self._pending: deque[job_pb2.ProgressEvent] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False
        self._error: Exception | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StreamBatches:
        self._reader = asyncio.create_task(self._read(), name="h2k-stream-reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            # wait() rather than awaiting the task: our own cancellation still propagates.
            await asyncio.wait([self._reader])

    async def _read(self) -> None:
        try:
            async for event in self._call:
                self._pending.append(event)
                self._arrived.set()
                if len(self._pending) >= MAX_PENDING:
                    self._room.clear()
                    await self._room.wait()
        except Exception as exc:
            self._error = exc
        finally:
            self._ended = True
            self._arrived.set()

    def __aiter__(self) -> StreamBatches:
        return self

    async def __anext__(self) -> list[job_pb2.ProgressEvent]:
        while not self._pending and not self._ended:
            self._arrived.clear()
            await self._arrived.wait()
        if self._pending:
            take = min(len(self._pending), MAX_BATCH)
            batch = [self._pending.popleft() for _ in range(take)]
            self._room.set()
            return batch
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        raise StopAsyncIteration
