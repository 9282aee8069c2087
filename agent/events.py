"""Per-job event logs and their live fan-out.

Each event is appended to ``<state-dir>/events/<job_id>.jsonl`` (flushed; the terminal event is
fsynced) *before* anyone is sent it, so a stream can always be resumed from the log
(``AttachJob``) after either side restarts. Live subscribers (the ExecuteJob stream and any
AttachJob streams) get the same events through an in-memory queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

from protocol.conversion import event_from_json, event_to_json, timestamp_to_proto, utcnow
from protocol.gen.h2k.v1 import job_pb2

log = logging.getLogger(__name__)

TERMINAL = frozenset(
    {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
)


def is_terminal(event: job_pb2.ProgressEvent) -> bool:
    return event.state in TERMINAL


class Subscription:
    """Live events of one job, in order; iteration ends after the terminal event."""

    def __init__(self, log_: EventLog, job_id: str) -> None:
        self.job_id = job_id
        self._log = log_
        self._queue: asyncio.Queue[job_pb2.ProgressEvent] = asyncio.Queue()

    def deliver(self, event: job_pb2.ProgressEvent) -> None:
        self._queue.put_nowait(event)

    async def __aiter__(self) -> AsyncIterator[job_pb2.ProgressEvent]:
        try:
            while True:
                event = await self._queue.get()
                yield event
                if is_terminal(event):
                    return
        finally:
            self.close()

    def close(self) -> None:
        self._log.unsubscribe(self)


class EventLog:
    """The event logs of every job this agent ran, under ``<state_dir>/events``."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "events"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._subscribers: dict[str, list[Subscription]] = defaultdict(list)

    def path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.jsonl"

    def append(self, event: job_pb2.ProgressEvent) -> None:
        """Persist an event, then hand it to the live subscribers of its job."""
        terminal = is_terminal(event)
        with self.path(event.job_id).open("a", encoding="utf-8") as handle:
            handle.write(event_to_json(event) + "\n")
            handle.flush()
            if terminal:
                os.fsync(handle.fileno())
        for subscription in list(self._subscribers.get(event.job_id, ())):
            subscription.deliver(event)

    def begin_attempt(self, job_id: str) -> None:
        """Start a fresh log for a new attempt; an earlier attempt's log is kept aside.

        A retry continues the job's seq, and the interrupted attempt's log may hold events
        the control plane never received (or a closing event written after a restart) with
        the same numbers; replaying those to AttachJob would mix two attempts.
        """
        path = self.path(job_id)
        if path.exists():
            os.replace(path, path.with_name(f"{path.name}.{time.time_ns()}.old"))

    def subscribe(self, job_id: str) -> Subscription:
        """Receive every event of ``job_id`` appended from now on."""
        subscription = Subscription(self, job_id)
        self._subscribers[job_id].append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.job_id)
        if subscribers and subscription in subscribers:
            subscribers.remove(subscription)
        if not subscribers:
            self._subscribers.pop(subscription.job_id, None)

    def exists(self, job_id: str) -> bool:
        return self.path(job_id).exists()

    def read_after(self, job_id: str, after_seq: int = 0) -> list[job_pb2.ProgressEvent]:
        """Logged events of ``job_id`` with seq > after_seq, in order (empty when none).

        A re-run that restarted numbering cannot produce duplicates: an event whose seq is not
        above the last one returned is skipped.
        """
        try:
            lines = self.path(job_id).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        events: list[job_pb2.ProgressEvent] = []
        last = after_seq
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = event_from_json(line)
            except Exception:
                # A torn last line after a crash; everything before it is intact.
                log.warning("skipping unreadable event line job_id=%s line=%d", job_id, number)
                continue
            if event.seq > last:
                events.append(event)
                last = event.seq
        return events

    def last_event(self, job_id: str) -> job_pb2.ProgressEvent | None:
        events = self.read_after(job_id, 0)
        return events[-1] if events else None

    def unfinished_jobs(self) -> list[job_pb2.ProgressEvent]:
        """The last event of every logged job that has no terminal event."""
        unfinished = []
        for path in sorted(self.directory.glob("*.jsonl")):
            last = self.last_event(path.stem)
            if last is not None and not is_terminal(last):
                unfinished.append(last)
        return unfinished


class JobEvents:
    """Numbers and records the events of one job attempt; the terminal event goes out once."""

    def __init__(
        self, log_: EventLog, *, job_id: str, attempt: int, agent: str, start_seq: int
    ) -> None:
        self._log = log_
        self.job_id = job_id
        self.attempt = attempt
        self.agent = agent
        self.next_seq = max(start_seq, 1)
        self.last_state: job_pb2.JobState = job_pb2.JOB_STATE_UNSPECIFIED
        self.finished = False

    def emit(self, state: job_pb2.JobState, **fields: object) -> job_pb2.ProgressEvent:
        """Record and publish one event.

        Raises:
            RuntimeError: the terminal event already went out.
        """
        if self.finished:
            raise RuntimeError(f"job {self.job_id} already has its terminal event")
        event = job_pb2.ProgressEvent(
            job_id=self.job_id,
            seq=self.next_seq,
            time=timestamp_to_proto(utcnow()),
            state=state,
            attempt=self.attempt,
            agent=self.agent,
            **fields,  # type: ignore[arg-type]
        )
        self._log.append(event)
        self.next_seq += 1
        self.last_state = state
        self.finished = state in TERMINAL
        return event
