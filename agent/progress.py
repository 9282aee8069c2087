"""Progress reporting for a running job: monotonic percent, throttled events."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.events import JobEvents
from protocol.gen.h2k.v1 import job_pb2

MIN_INTERVAL_SECONDS = 0.1  # at most ~10 progress events a second


class ProgressReporter:
    """Turns an operation's progress calls into PROGRESSING events.

    The percent never goes down; an event goes out when the phase changes, or when the percent
    (to 0.01) changed and the last event is at least ``min_interval`` old.
    """

    def __init__(
        self,
        events: JobEvents,
        *,
        min_interval: float = MIN_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events = events
        self._min_interval = min_interval
        self._clock = clock
        self._last_time = float("-inf")
        self.phase = "start"
        self.percent = 0.0

    def report(
        self,
        phase: str,
        percent: float,
        *,
        bytes_done: int = 0,
        bytes_total: int = 0,
        message: str = "",
        force: bool = False,
    ) -> bool:
        """Report progress; returns whether an event was emitted."""
        percent = round(min(100.0, max(percent, self.percent)), 2)
        now = self._clock()
        phase_changed = phase != self.phase
        due = percent != self.percent and now - self._last_time >= self._min_interval
        if not (phase_changed or due or force):
            return False
        self.phase = phase
        self.percent = percent
        self._last_time = now
        self._events.emit(
            job_pb2.JOB_STATE_PROGRESSING,
            phase=phase,
            progress_percent=percent,
            bytes_done=bytes_done,
            bytes_total=bytes_total,
            message=message,
        )
        return True
