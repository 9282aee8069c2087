"""What every store backend decides the same way: pure functions, no I/O.

A backend reads the row, asks these rules what to write, and writes it in its own dialect
and transaction; the state table itself is :mod:`protocol.states`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from controlplane.store.base import UPDATABLE_FIELDS
from protocol.errors import AlreadyExists
from protocol.spec import JobSpec
from protocol.states import TRANSITIONS, JobState, check_transition

# A new job's history starts in this state; the admission steps below take it to QUEUED.
NEW_JOB_STATE = JobState.CREATED

# States of unfinished jobs (those the scheduler may still need to place).
LIVE_STATES = tuple(s for s in JobState if not s.is_terminal)


def _shortest_path(start: JobState, goal: JobState) -> tuple[JobState, ...]:
    """The shortest path from ``start`` to ``goal`` through the state table."""
    paths: dict[JobState, tuple[JobState, ...]] = {start: (start,)}
    frontier = [start]
    while frontier:
        following = []
        for state in frontier:
            for target in sorted(TRANSITIONS[state]):
                if target not in paths:
                    paths[target] = (*paths[state], target)
                    following.append(target)
        frontier = following
    if goal not in paths:
        raise RuntimeError(f"the state table has no path {start} -> {goal}")
    return paths[goal]


# Created, validated (on receipt) and queued in one transaction: the table's own path.
ADMISSION_PATH = _shortest_path(NEW_JOB_STATE, JobState.QUEUED)


@dataclass(frozen=True)
class HistoryEntry:
    """One row of a job's history, as the store will write it."""

    from_state: JobState
    to_state: JobState
    reason: str
    attempt: int


@dataclass(frozen=True)
class PlannedTransition:
    """What one legal transition writes: the job's changed fields, and its history row."""

    updates: dict[str, Any]
    history: HistoryEntry | None


def admission_reason(to_state: JobState, spec: JobSpec) -> str:
    """The history reason of one step of :data:`ADMISSION_PATH`."""
    if to_state is JobState.VALIDATED:
        return f"spec valid; submitted by {spec.audit.requested_by}"
    if to_state is JobState.QUEUED:
        return "waiting for an agent"
    raise RuntimeError(f"no admission reason for {to_state}")


def admission_history(spec: JobSpec) -> list[HistoryEntry]:
    """The history rows of a new job's admission, each step checked as a transition is.

    The whole path is known before anything is stored (the job starts in CREATED at attempt
    0), so a backend inserts the row in the path's last state with these rows beside it, in
    one transaction, instead of moving a stored row step by step.
    """
    return [
        HistoryEntry(from_state, to_state, admission_reason(to_state, spec), attempt)
        for from_state, to_state, attempt in _admission_steps_checked()
    ]


@functools.cache
def _admission_steps_checked() -> tuple[tuple[JobState, JobState, int], ...]:
    """(from, to, attempt) of each admission step with a history row, checked against the
    state table once (the same for every job)."""
    steps = []
    for from_state, to_state in pairwise(ADMISSION_PATH):
        plan = plan_transition(from_state, 0, to_state, "", {})
        if plan.history is not None:
            steps.append((from_state, to_state, plan.history.attempt))
    return tuple(steps)


def writes_history(from_state: JobState, to_state: JobState) -> bool:
    """Whether a transition gets a history row (progress updates do not)."""
    return not (from_state is JobState.PROGRESSING and to_state is JobState.PROGRESSING)


def check_field_updates(updates: Mapping[str, Any]) -> None:
    """Refuse updates of fields a transition or update_job may not change.

    Raises:
        ValueError: naming the fields that cannot be updated.
    """
    unknown = set(updates) - UPDATABLE_FIELDS - {"state"}
    if unknown:
        raise ValueError(f"cannot update job fields {sorted(unknown)}")


def plan_transition(
    from_state: JobState,
    attempt: int,
    to_state: JobState,
    reason: str,
    updates: Mapping[str, Any],
) -> PlannedTransition:
    """What moving a job in ``from_state`` (at ``attempt``) to ``to_state`` writes.

    Raises:
        IllegalTransition: the state table does not allow it.
        ValueError: an update names a field that cannot be updated.
    """
    check_transition(from_state, to_state)
    check_field_updates(updates)
    history = None
    if writes_history(from_state, to_state):
        history = HistoryEntry(from_state, to_state, reason, updates.get("attempt", attempt))
    return PlannedTransition({**updates, "state": to_state.value}, history)


def assignment_updates(agent: str, attempt: int) -> dict[str, Any]:
    """The fields a QUEUED -> ASSIGNED transition sets besides the state."""
    check_transition(JobState.QUEUED, JobState.ASSIGNED)
    return {"assigned_agent": agent, "attempt": attempt, "queue_reason": ""}


def check_resubmission(field: str, spec: JobSpec, stored_fingerprint: str | None) -> None:
    """Refuse a submit whose job_id is stored with another spec (None: nothing stored).

    Raises:
        AlreadyExists: ``field`` names the spec's job_id in the message.
    """
    if stored_fingerprint is not None and stored_fingerprint != spec.fingerprint():
        raise AlreadyExists(f"{field}: job {spec.job_id} already exists with a different spec")
