"""When a dropped manifest is complete (pure: observations and clock readings in, verdicts out).

HyperSDK writes the manifest in place with plain writes, so a reader can see half of it. A drop
is READY once it parses as JSON and its size and mtime did not change across ``settle``
seconds; a drop that is not READY ``grace`` seconds after it was first seen has EXPIRED. A
different inode at the same name is a new drop (the old one was claimed and replaced).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class Verdict(enum.Enum):
    WAIT = "wait"
    READY = "ready"
    EXPIRED = "expired"


@dataclass(frozen=True)
class FileStamp:
    """What a ``stat`` of the drop said."""

    inode: int
    size: int
    mtime_ns: int


@dataclass
class _Seen:
    stamp: FileStamp
    first_seen: float
    stable_since: float
    problem: str = "not stable yet"


def parse_problem(content: bytes) -> str:
    """Why ``content`` is not a JSON document ("" when it is one)."""
    try:
        json.loads(content)
    except ValueError as error:
        return str(error)
    return ""


class SettleTracker:
    """The drops of one queue directory, by file name."""

    def __init__(self, settle_seconds: float, grace_seconds: float) -> None:
        self.settle = settle_seconds
        self.grace = grace_seconds
        self._seen: dict[str, _Seen] = {}

    def observe(self, name: str, stamp: FileStamp, now: float) -> Verdict:
        """Record a ``stat`` of ``name``; READY asks the caller to read and :meth:`confirm` it.

        Returns:
            WAIT (look again later), READY (stable for ``settle``: read the content and call
            :meth:`confirm`) or EXPIRED (not a complete document within ``grace``).
        """
        seen = self._seen.get(name)
        if seen is None or seen.stamp.inode != stamp.inode:
            self._seen[name] = _Seen(stamp, now, now)
            return Verdict.WAIT
        if seen.stamp != stamp:
            seen.stamp, seen.stable_since, seen.problem = stamp, now, "still being written"
        if now - seen.stable_since >= self.settle:
            return Verdict.READY
        if now - seen.first_seen >= self.grace:
            return Verdict.EXPIRED
        return Verdict.WAIT

    def confirm(self, name: str, content: bytes, now: float) -> Verdict:
        """READY when the stable ``content`` parses, else WAIT or (after grace) EXPIRED."""
        seen = self._seen.get(name)
        problem = parse_problem(content)
        if not problem:
            return Verdict.READY
        if seen is None:
            return Verdict.WAIT
        seen.problem = f"not JSON ({problem})"
        return Verdict.EXPIRED if now - seen.first_seen >= self.grace else Verdict.WAIT

    def problem(self, name: str) -> str:
        """Why ``name`` is not ready (for the error of an EXPIRED drop)."""
        seen = self._seen.get(name)
        return seen.problem if seen else "unknown"

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)

    def forget_missing(self, present: set[str]) -> None:
        """Drop the records of files that are gone (claimed by us or another intake)."""
        for name in [n for n in self._seen if n not in present]:
            del self._seen[name]

    @property
    def pending(self) -> bool:
        return bool(self._seen)
