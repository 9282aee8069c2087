"""WatchJobBatches messages, built once for every watcher that sends the same events.

Watchers of a busy job wake on the same publish and usually take the same pending events, so
the messages for a run of events (a job's seq range: a stored event never changes) are built
and cut to size once and shared; building them per watcher cost about a fifth of the control
plane's CPU with 100 watchers at 1,000 events/s.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from protocol.gen.h2k.v1 import job_pb2, services_pb2

# One message holds at most this many events and about this many bytes (gRPC clients accept
# 4 MiB by default).
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1 << 20
# Runs remembered: enough for every watcher of a few busy jobs to find the one it needs,
# and at most this many events in them (a bound on the memory the copies take).
CACHED_RUNS = 64
CACHED_EVENTS = 20_000


class BatchMessages:
    """The WatchJobBatches messages of runs of a job's events, shared between watchers."""

    def __init__(self, cached_runs: int = CACHED_RUNS, cached_events: int = CACHED_EVENTS) -> None:
        self._cached_runs = cached_runs
        self._cached_events = cached_events
        self._events = 0
        self._runs: OrderedDict[tuple[str, int, int], list[services_pb2.ProgressEventBatch]] = (
            OrderedDict()
        )

    def messages(
        self, events: Sequence[job_pb2.ProgressEvent]
    ) -> list[services_pb2.ProgressEventBatch]:
        """The messages carrying ``events`` (one job's, consecutive seqs), in order."""
        key = (events[0].job_id, events[0].seq, events[-1].seq)
        messages = self._runs.get(key)
        if messages is None:
            messages = [services_pb2.ProgressEventBatch(events=part) for part in _cut(events)]
            self._runs[key] = messages
            self._events += len(events)
            while len(self._runs) > self._cached_runs or self._events > self._cached_events:
                (_job, first, last), _messages = self._runs.popitem(last=False)
                self._events -= last - first + 1
        return messages


def _cut(events: Sequence[job_pb2.ProgressEvent]) -> list[Sequence[job_pb2.ProgressEvent]]:
    """``events`` cut into parts of at most MAX_BATCH_EVENTS and about MAX_BATCH_BYTES."""
    parts = []
    start, size = 0, 0
    for end, event in enumerate(events):
        event_size = event.ByteSize() + 8  # with the field's tag and length
        if end > start and (end - start >= MAX_BATCH_EVENTS or size + event_size > MAX_BATCH_BYTES):
            parts.append(events[start:end])
            start, size = end, 0
        size += event_size
    parts.append(events[start:])
    return parts
