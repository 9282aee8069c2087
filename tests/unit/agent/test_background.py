"""agent.background: a task tied to a block, never outliving it; works run together."""

from __future__ import annotations

import asyncio

import pytest

from agent.background import meanwhile, together
from agent.errors import ToolFailed


def test_the_body_gets_the_result_it_awaits() -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 42

    async def main() -> int:
        async with meanwhile(work(), "answer") as task:
            return await task

    assert asyncio.run(main()) == 42


def test_a_task_the_body_did_not_wait_for_is_cancelled_on_the_way_out() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def main() -> asyncio.Task[None]:
        async with meanwhile(forever(), "forever") as task:
            await started.wait()
        return task

    task = asyncio.run(main())
    assert task.cancelled()


def test_the_bodys_error_wins_and_an_unawaited_failure_is_dropped() -> None:
    async def fails() -> None:
        raise ValueError("map failed")

    async def main() -> None:
        async with meanwhile(fails(), "fails") as task:
            await asyncio.wait([task])  # failed, and nobody asks for its result
            raise KeyError("body")

    with pytest.raises(KeyError, match="body"):
        asyncio.run(main())


def test_a_failure_the_body_awaits_reaches_it() -> None:
    async def fails() -> None:
        raise ValueError("map failed")

    async def main() -> None:
        async with meanwhile(fails(), "fails") as task:
            await task

    with pytest.raises(ValueError, match="map failed"):
        asyncio.run(main())


def test_together_raises_the_first_failure_as_it_is_and_cancels_the_rest() -> None:
    stopped = []

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.append("slow")
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ToolFailed("qemu-img create: no")

    async def main() -> None:
        await together(slow(), failing())

    with pytest.raises(ToolFailed, match="qemu-img create: no"):
        asyncio.run(asyncio.wait_for(main(), 5))
    assert stopped == ["slow"]


def test_together_waits_for_every_work() -> None:
    done: list[int] = []

    async def work(n: int) -> None:
        await asyncio.sleep(0.01 * n)
        done.append(n)

    asyncio.run(together(work(2), work(1)))
    assert sorted(done) == [1, 2]
