"""Reading an agent's stream in batches: what arrives while a batch is being stored comes
with the next one, a failure comes after the events before it, and the reader holds back
when too much waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from controlplane import stream_batches
from controlplane.stream_batches import StreamBatches
from protocol.gen.h2k.v1 import job_pb2


class Stream:
    """An agent stream double: yields the events it is given, then ends or fails."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[job_pb2.ProgressEvent | Exception | None] = asyncio.Queue()
        self.taken = 0

    def send(self, *seqs: int) -> None:
        for seq in seqs:
            self.queue.put_nowait(job_pb2.ProgressEvent(job_id="job-1", seq=seq))

    def __aiter__(self) -> AsyncIterator[job_pb2.ProgressEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[job_pb2.ProgressEvent]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            self.taken += 1
            yield item


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)  # lets the reader task take what is queued


async def test_what_arrives_meanwhile_comes_as_one_batch():
    stream = Stream()
    async with StreamBatches(stream) as batches:
        stream.send(1)
        first = await anext(batches)
        stream.send(2, 3, 4)  # arrive while "storing" the first batch
        await settle()
        second = await anext(batches)
        stream.queue.put_nowait(None)
        rest = [batch async for batch in batches]
    assert [e.seq for e in first] == [1]
    assert [e.seq for e in second] == [2, 3, 4]
    assert rest == []


async def test_a_failure_comes_after_the_events_before_it():
    stream = Stream()
    stream.send(1, 2)
    stream.queue.put_nowait(RuntimeError("stream broke"))
    seen = []
    with pytest.raises(RuntimeError, match="stream broke"):
        async with StreamBatches(stream) as batches:
            async for batch in batches:
                seen.extend(e.seq for e in batch)
    assert seen == [1, 2]


async def test_the_reader_holds_back_when_too_much_waits(monkeypatch):
    monkeypatch.setattr(stream_batches, "MAX_PENDING", 5)
    monkeypatch.setattr(stream_batches, "MAX_BATCH", 3)
    stream = Stream()
    stream.send(*range(1, 21))
    async with StreamBatches(stream) as batches:
        await settle()
        held_back_at = stream.taken
        first = await anext(batches)
        await settle()
        taken_after = stream.taken
    assert held_back_at == 5
    assert [e.seq for e in first] == [1, 2, 3]
    assert taken_after == 8  # room again: it read on until 5 waited again


async def test_leaving_the_block_stops_the_reader():
    stream = Stream()
    async with StreamBatches(stream) as batches:
        stream.send(1)
        await anext(batches)
    stream.send(2)
    await settle()
    assert stream.taken == 1
