from __future__ import annotations

import itertools

import pytest

from protocol.states import (
    TERMINAL_STATES,
    IllegalTransition,
    JobState,
    check_transition,
    is_allowed,
)

S = JobState

LEGAL = {
    (S.CREATED, S.VALIDATED),
    (S.VALIDATED, S.QUEUED),
    (S.QUEUED, S.ASSIGNED),
    (S.ASSIGNED, S.RUNNING),
    (S.ASSIGNED, S.QUEUED),
    (S.RUNNING, S.PROGRESSING),
    (S.PROGRESSING, S.PROGRESSING),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.RETRYING),
    (S.PROGRESSING, S.COMPLETED),
    (S.PROGRESSING, S.FAILED),
    (S.PROGRESSING, S.RETRYING),
    (S.RETRYING, S.QUEUED),
    (S.RETRYING, S.FAILED),
} | {(s, S.CANCELLED) for s in S if s not in TERMINAL_STATES}


def test_there_are_ten_states() -> None:
    assert len(S) == 10


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(S, S)))
def test_table_matches_the_agreed_machine(src: JobState, dst: JobState) -> None:
    assert is_allowed(src, dst) == ((src, dst) in LEGAL)
    if (src, dst) in LEGAL:
        check_transition(src, dst)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(src, dst)


def test_validation_failure_is_not_a_transition() -> None:
    assert not is_allowed(S.CREATED, S.FAILED)


def test_terminal_states_are_final() -> None:
    for state in TERMINAL_STATES:
        assert state.is_terminal
        assert not any(is_allowed(state, other) for other in S)
