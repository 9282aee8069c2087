"""The job state machine: one table decides which transitions are legal."""

from __future__ import annotations

from enum import StrEnum

import grpc

from protocol.errors import H2KError


class JobState(StrEnum):
    CREATED = "CREATED"
    VALIDATED = "VALIDATED"
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    PROGRESSING = "PROGRESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    RETRYING = "RETRYING"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})

_S = JobState
_ALLOWED: dict[JobState, frozenset[JobState]] = {
    _S.CREATED: frozenset({_S.VALIDATED}),
    _S.VALIDATED: frozenset({_S.QUEUED}),
    _S.QUEUED: frozenset({_S.ASSIGNED}),
    # assigned -> queued: the agent did not accept the dispatch (full, unreachable, gone);
    # nothing ran, so the job goes back to the queue without using up a retry.
    _S.ASSIGNED: frozenset({_S.RUNNING, _S.QUEUED}),
    _S.RUNNING: frozenset({_S.PROGRESSING, _S.COMPLETED, _S.FAILED, _S.RETRYING}),
    _S.PROGRESSING: frozenset({_S.PROGRESSING, _S.COMPLETED, _S.FAILED, _S.RETRYING}),
    _S.RETRYING: frozenset({_S.QUEUED, _S.FAILED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}
# Any non-terminal state may be cancelled.
for _state, _targets in list(_ALLOWED.items()):
    if not _state.is_terminal:
        _ALLOWED[_state] = _targets | {_S.CANCELLED}

TRANSITIONS: dict[JobState, frozenset[JobState]] = dict(_ALLOWED)


class IllegalTransition(H2KError):
    """A transition not in the state table; reported as FAILED_PRECONDITION."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, from_state: JobState, to_state: JobState) -> None:
        super().__init__(f"illegal job state transition {from_state} -> {to_state}")
        self.from_state = from_state
        self.to_state = to_state


def is_allowed(from_state: JobState, to_state: JobState) -> bool:
    """Return whether ``from_state -> to_state`` is in the state table."""
    return to_state in TRANSITIONS[from_state]


def check_transition(from_state: JobState, to_state: JobState) -> None:
    """Raise :class:`IllegalTransition` unless the transition is legal."""
    if not is_allowed(from_state, to_state):
        raise IllegalTransition(from_state, to_state)
