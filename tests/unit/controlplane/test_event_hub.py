"""The event hub: publishing never waits, slow watchers are marked lagged."""

from __future__ import annotations

from controlplane.events import EventHub
from protocol.gen.h2k.v1 import job_pb2


def event(seq: int, job_id: str = "job-1") -> job_pb2.ProgressEvent:
    return job_pb2.ProgressEvent(job_id=job_id, seq=seq)


async def test_every_subscriber_of_a_job_gets_its_events():
    hub = EventHub()
    with (
        hub.subscribe("job-1") as first,
        hub.subscribe("job-1") as second,
        hub.subscribe("job-2") as other,
    ):
        for seq in (1, 2, 3):
            hub.publish(event(seq))
        assert [e.seq for e in await first.wait(1)] == [1, 2, 3]
        assert [e.seq for e in await second.wait(1)] == [1, 2, 3]
        assert await other.wait(0.01) == []
    assert hub.subscriber_count("job-1") == 0


async def test_a_slow_watcher_is_marked_lagged_without_blocking_the_others():
    hub = EventHub(buffer=4)
    with hub.subscribe("job-1") as slow, hub.subscribe("job-1") as fast:
        for seq in range(1, 4):
            hub.publish(event(seq))
        assert [e.seq for e in await fast.wait(1)] == [1, 2, 3]
        for seq in range(4, 10):
            hub.publish(event(seq))  # returns at once although nobody reads "slow"
            assert [e.seq for e in await fast.wait(1)] == [seq]
        assert slow.lagged
        assert not fast.lagged
        slow.clear_lag()
        hub.publish(event(10))
        assert [e.seq for e in await slow.wait(1)][-1] == 10


async def test_terminal_notification_wakes_watchers_and_listeners():
    hub = EventHub()
    ended: list[str] = []
    hub.add_terminal_listener(ended.append)
    with hub.subscribe("job-1") as subscription:
        hub.notify_terminal("job-1")
        assert await subscription.wait(1) == []
        assert subscription.terminal
    assert ended == ["job-1"]
