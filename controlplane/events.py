"""The in-memory fan-out of progress events to WatchJob streams.

Publishing never blocks: each subscriber has a bounded buffer, and a subscriber that falls
behind is marked lagged and its buffer dropped; it re-reads the missed events from the store
by seq. The store stays the source of truth; the hub only says "something new happened".

With several replicas, events stored by another replica arrive as a bare "job X changed"
(:meth:`EventHub.remote_change`): its watchers re-read the store. While such news cannot be
heard, watchers poll the store by seq every :data:`FALLBACK_POLL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

from protocol.gen.h2k.v1 import job_pb2

log = logging.getLogger(__name__)

# Events a watcher may have pending before it is marked lagged. A batching watcher
# (WatchJobBatches) takes all of them with each write, so this only has to cover one slow
# write at the highest event rate (1,000 events/s); entries are references to shared events.
DEFAULT_BUFFER = 8192
# A watcher re-reads the job from the store at least this often, whatever the hub says.
RECHECK_SECONDS = 30.0
# ... and this often while changes made by other replicas cannot be heard.
FALLBACK_POLL_SECONDS = 1.0


class Subscription:
    """One watcher's view of one job's live events."""

    def __init__(self, job_id: str, buffer: int) -> None:
        self.job_id = job_id
        self.lagged = False
        self.terminal = False
        self._buffer = buffer
        self._events: deque[job_pb2.ProgressEvent] = deque()
        self._wake = asyncio.Event()

    def _push(self, events: Sequence[job_pb2.ProgressEvent]) -> None:
        if self.lagged:
            return  # the watcher re-reads the store before following the buffer again
        if len(self._events) + len(events) > self._buffer:
            # Drop what is buffered: the watcher re-reads it from the store anyway.
            self._events.clear()
            self.lagged = True
            log.info("watcher lagged job_id=%s buffer=%d", self.job_id, self._buffer)
        else:
            self._events.extend(events)
        self._wake.set()

    def _mark_stale(self) -> None:
        """The store has news the buffer lacks: the watcher re-reads it by seq."""
        self._events.clear()
        self.lagged = True
        self._wake.set()

    def _mark_terminal(self) -> None:
        self.terminal = True
        self._wake.set()

    async def wait(self, timeout: float | None = None) -> list[job_pb2.ProgressEvent]:
        """Wait for news (events, lag or terminal) and take the buffered events.

        Returns an empty list on timeout or when only the flags changed; callers check
        :attr:`lagged` and :attr:`terminal` after each call.
        """
        if not self._events and not self.lagged and not self.terminal:
            # asyncio.timeout, not wait_for: no task per wait (watchers of a busy job wait
            # hundreds of times a second each).
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        self._wake.clear()
        events = list(self._events)
        self._events.clear()
        return events

    def clear_lag(self) -> None:
        """Call before re-reading the store: events from now on are buffered again."""
        self.lagged = False


class EventHub:
    """Subscribers per job_id; publish from the dispatcher, read from WatchJob."""

    def __init__(self, buffer: int = DEFAULT_BUFFER) -> None:
        self._buffer = buffer
        self._subscribers: dict[str, set[Subscription]] = {}
        self._terminal_listeners: list[Callable[[str], None]] = []
        # Set when the control plane stops: watchers end their streams so clients reconnect.
        self.closed = False
        # How long a watcher follows the hub alone before it re-reads the store.
        self.recheck_seconds = RECHECK_SECONDS

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        """Follow a job's events for the duration of the ``with`` block."""
        subscription = Subscription(job_id, self._buffer)
        self._subscribers.setdefault(job_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(job_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[job_id]

    def subscriber_count(self, job_id: str) -> int:
        return len(self._subscribers.get(job_id, ()))

    def publish(self, event: job_pb2.ProgressEvent) -> None:
        """Hand a stored event to every watcher of its job, without waiting for any."""
        self.publish_batch((event,))

    def publish_batch(self, events: Sequence[job_pb2.ProgressEvent]) -> None:
        """Hand stored events of one job (in seq order) to every watcher of the job."""
        if not events:
            return
        for subscription in tuple(self._subscribers.get(events[0].job_id, ())):
            subscription._push(events)

    def remote_change(self, job_id: str | None) -> None:
        """Another replica changed ``job_id`` (None: maybe any job): its watchers re-read."""
        if job_id is None:
            targets = [s for subs in self._subscribers.values() for s in subs]
        else:
            targets = list(self._subscribers.get(job_id, ()))
        for subscription in targets:
            subscription._mark_stale()

    def set_remote_changes_heard(self, heard: bool) -> None:
        """Whether other replicas' changes reach :meth:`remote_change`; if not, poll."""
        recheck = RECHECK_SECONDS if heard else FALLBACK_POLL_SECONDS
        if recheck != self.recheck_seconds:
            self.recheck_seconds = recheck
            log.info("watchers poll the store every %gs", recheck)
            if not heard:
                self.remote_change(None)  # wake them so the shorter wait applies now

    def close(self) -> None:
        """Wake every watcher for good (the control plane is stopping)."""
        self.closed = True
        for subscriptions in tuple(self._subscribers.values()):
            for subscription in tuple(subscriptions):
                subscription._mark_terminal()

    def add_terminal_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(job_id)`` whenever a job becomes terminal."""
        self._terminal_listeners.append(listener)

    def notify_terminal(self, job_id: str) -> None:
        """Say that a job reached a terminal state (after the store recorded it)."""
        for subscription in tuple(self._subscribers.get(job_id, ())):
            subscription._mark_terminal()
        for listener in self._terminal_listeners:
            listener(job_id)
