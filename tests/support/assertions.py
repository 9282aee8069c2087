"""Checks on a finished job that a user would make."""

from __future__ import annotations

import itertools
from typing import Any


def assert_gap_free_monotonic(events: list[dict[str, Any]], first_seq: int = 1) -> None:
    """seq runs first_seq..N without gaps; progress never goes down; one terminal event, last."""
    seqs = [int(e["seq"]) for e in events]
    assert seqs == list(range(first_seq, first_seq + len(seqs))), f"seq not gap-free: {seqs}"
    percents = [float(e.get("progress_percent", 0.0)) for e in events]
    assert all(b >= a for a, b in itertools.pairwise(percents)), percents
    states = [e.get("state") for e in events]
    assert states[0] == "RUNNING", states
    terminal = [s for s in states if s in ("COMPLETED", "FAILED", "CANCELLED")]
    assert len(terminal) == 1 and states[-1] == terminal[0], states
