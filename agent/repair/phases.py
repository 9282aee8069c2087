"""Honest progress for a repair: each phase gets a share of 100 % by its expected weight."""

from __future__ import annotations

import time
from collections.abc import Sequence

from agent.progress import ProgressReporter

# Relative weights: converting dominates, then fsck; the report has the measured timings.
WEIGHTS = {
    "inspect": 1.0,
    "convert": 40.0,
    "attach": 4.0,
    "detect": 2.0,
    "fsck": 12.0,
    "mount": 4.0,
    "initramfs": 6.0,
    "detach": 4.0,
    "boot_check": 30.0,
    "finalize": 2.0,
}
FIX_WEIGHT = 2.0


class PhaseClock:
    """Emits a progress event as each phase starts and times the phases."""

    def __init__(self, progress: ProgressReporter, phases: Sequence[str]) -> None:
        self._progress = progress
        weights = [WEIGHTS.get(p, FIX_WEIGHT) for p in phases]
        total = sum(weights)
        self._start: dict[str, float] = {}
        self._end: dict[str, float] = {}
        done = 0.0
        for phase, weight in zip(phases, weights, strict=True):
            self._start[phase] = 100.0 * done / total
            done += weight
            self._end[phase] = 100.0 * done / total
        self.seconds: dict[str, float] = {}
        self._current: str | None = None
        self._since = time.monotonic()

    def enter(self, phase: str, message: str = "") -> None:
        """The job is now in ``phase`` (the previous phase's time is recorded)."""
        self._stop()
        self._current = phase
        self._since = time.monotonic()
        self._progress.report(phase, self._start.get(phase, 0.0), message=message, force=True)

    def within(self, phase: str, fraction: float, message: str = "", **sizes: int) -> None:
        """Progress inside the current phase (``fraction`` 0..1)."""
        start, end = self._start.get(phase, 0.0), self._end.get(phase, 0.0)
        percent = start + (end - start) * min(1.0, max(0.0, fraction))
        self._progress.report(phase, percent, message=message, **sizes)  # type: ignore[arg-type]

    def _stop(self) -> None:
        if self._current is not None:
            elapsed = time.monotonic() - self._since
            self.seconds[self._current] = round(self.seconds.get(self._current, 0) + elapsed, 3)
            self._current = None

    def finish(self) -> dict[str, float]:
        self._stop()
        return dict(self.seconds)
