"""WatchJobBatches messages: cut to what a client accepts, built once per run of events."""

from __future__ import annotations

from controlplane import watch_batches
from controlplane.watch_batches import BatchMessages
from protocol.gen.h2k.v1 import job_pb2


def events(first: int, last: int, message: str = "") -> list[job_pb2.ProgressEvent]:
    return [
        job_pb2.ProgressEvent(job_id="job-1", seq=seq, message=message)
        for seq in range(first, last + 1)
    ]


def seqs(messages) -> list[list[int]]:
    return [[e.seq for e in m.events] for m in messages]


def test_a_run_is_cut_by_count_and_by_size(monkeypatch):
    monkeypatch.setattr(watch_batches, "MAX_BATCH_EVENTS", 3)
    assert seqs(BatchMessages().messages(events(1, 7))) == [[1, 2, 3], [4, 5, 6], [7]]
    monkeypatch.setattr(watch_batches, "MAX_BATCH_EVENTS", 1000)
    monkeypatch.setattr(watch_batches, "MAX_BATCH_BYTES", 2500)
    big = events(1, 5, message="x" * 1000)
    messages = BatchMessages().messages(big)
    assert seqs(messages) == [[1, 2], [3, 4], [5]]
    assert all(m.ByteSize() <= 2500 for m in messages)


def test_an_event_larger_than_the_limit_still_goes_out_alone(monkeypatch):
    monkeypatch.setattr(watch_batches, "MAX_BATCH_BYTES", 100)
    assert seqs(BatchMessages().messages(events(1, 2, message="y" * 500))) == [[1], [2]]


def test_watchers_taking_the_same_run_share_its_messages():
    cache = BatchMessages(cached_runs=2)
    first = cache.messages(events(1, 10))
    assert cache.messages(events(1, 10)) is first
    cache.messages(events(11, 12))
    cache.messages(events(13, 14))  # the oldest run is forgotten
    again = cache.messages(events(1, 10))
    assert again is not first
    assert seqs(again) == seqs(first) == [list(range(1, 11))]


def test_the_cache_holds_a_bounded_number_of_events():
    cache = BatchMessages(cached_runs=10, cached_events=25)
    first = cache.messages(events(1, 20))
    cache.messages(events(21, 30))  # 30 events cached: the oldest run goes
    assert cache.messages(events(21, 30)) is cache.messages(events(21, 30))
    assert cache.messages(events(1, 20)) is not first
