"""Which reason the scheduler stores for each kind of queued job, and how often it rewrites it.

Every queued job of a kind carries the kind's reason (:meth:`JobStore.set_queue_reasons`), so
a new reason rewrites every queued row of that kind: with 10,000 jobs queued that is one of
the largest writes the control plane makes. A busy kind's reason names the fleet's counts
("all 12 fitting agents are busy (48/48 slots used)"), and those change with every agent that
registers or leaves. While a fleet rolls out under a full queue every pass would rewrite the
whole queue for a new count, and the writes queued behind it (registrations, the jobs'
transitions) wait for it.

So when a busy kind's reason changes and it is still busy, the stored text stays for up to
``refresh`` seconds (one dispatcher tick) and jobs queued meanwhile get the stored text: the
counts a person reads are at most that late. Every other change (the kind stops being busy,
no agent can take it any more, a capability goes missing) is stored at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

# Kinds remembered: the same backstop as for the pass's specs (few kinds exist).
from controlplane.dispatch.scheduling_pass import MAX_KINDS_REMEMBERED


@dataclass(frozen=True)
class _Stored:
    reason: str
    busy: bool
    since: float  # clock() when this text was first given to the store


class QueueReasons:
    """Remembers the reason given to the store for each kind, and when it was first given."""

    def __init__(self, refresh: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._refresh = refresh
        self._clock = clock
        self._stored: dict[str, _Stored] = {}

    def to_store(self, reasons: Mapping[str, str], busy: Collection[str]) -> dict[str, str]:
        """The reasons to give the store for a pass's ``reasons`` (kind -> why it waits).

        ``busy``: the kinds that wait only because every agent able to run them is full.
        """
        now = self._clock()
        chosen: dict[str, str] = {}
        for kind, reason in reasons.items():
            last = self._stored.get(kind)
            if last is not None and last.reason != reason:
                counts_only = last.busy and kind in busy
                if counts_only and now - last.since < self._refresh:
                    chosen[kind] = last.reason
                    continue
            chosen[kind] = reason
            if last is None or last.reason != reason:
                if len(self._stored) >= MAX_KINDS_REMEMBERED:
                    self._stored.clear()
                self._stored[kind] = _Stored(reason, kind in busy, now)
        return chosen
