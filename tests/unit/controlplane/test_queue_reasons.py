"""How often the scheduler rewrites a kind's queue reason (controlplane.dispatch.queue_reasons)."""

from __future__ import annotations

from controlplane.dispatch.queue_reasons import QueueReasons

KIND = "qemu_img;mem=0;disk=0"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def busy(agents: int, slots: int = 4) -> str:
    return f"all {agents} fitting agents are busy ({agents * slots}/{agents * slots} slots used)"


def test_a_first_reason_is_stored_at_once() -> None:
    reasons = QueueReasons(refresh=1.0, clock=Clock())
    assert reasons.to_store({KIND: busy(3)}, busy={KIND}) == {KIND: busy(3)}


def test_new_counts_of_a_busy_kind_wait_for_the_refresh() -> None:
    clock = Clock()
    reasons = QueueReasons(refresh=1.0, clock=clock)
    reasons.to_store({KIND: busy(3)}, busy={KIND})
    clock.now += 0.25
    # An agent registered: the queue keeps the stored text (one rewrite of it saved) ...
    assert reasons.to_store({KIND: busy(4)}, busy={KIND}) == {KIND: busy(3)}
    clock.now += 0.5
    assert reasons.to_store({KIND: busy(5)}, busy={KIND}) == {KIND: busy(3)}
    # ... until the stored text is a refresh old: then the counts of now.
    clock.now += 0.25
    assert reasons.to_store({KIND: busy(6)}, busy={KIND}) == {KIND: busy(6)}
    clock.now += 0.5
    assert reasons.to_store({KIND: busy(7)}, busy={KIND}) == {KIND: busy(6)}


def test_the_same_reason_is_given_again_for_jobs_queued_since() -> None:
    clock = Clock()
    reasons = QueueReasons(refresh=1.0, clock=clock)
    reasons.to_store({KIND: busy(3)}, busy={KIND})
    clock.now += 0.25
    assert reasons.to_store({KIND: busy(3)}, busy={KIND}) == {KIND: busy(3)}
    clock.now += 0.75
    # Unchanged text is not a change: its age does not restart.
    assert reasons.to_store({KIND: busy(4)}, busy={KIND}) == {KIND: busy(4)}


def test_any_other_change_is_stored_at_once() -> None:
    clock = Clock()
    reasons = QueueReasons(refresh=1.0, clock=clock)
    reasons.to_store({KIND: "no agent registered"}, busy=())
    clock.now += 0.1
    # Agents came: from "none" to "busy" is news, not a count.
    assert reasons.to_store({KIND: busy(1)}, busy={KIND}) == {KIND: busy(1)}
    clock.now += 0.1
    # The fleet lost what the kind needs: news again, even within the refresh.
    assert reasons.to_store({KIND: "no agent has qemu_img"}, busy=()) == {
        KIND: "no agent has qemu_img"
    }
    clock.now += 0.1
    assert reasons.to_store({KIND: busy(2)}, busy={KIND}) == {KIND: busy(2)}


def test_kinds_are_independent() -> None:
    clock = Clock()
    reasons = QueueReasons(refresh=1.0, clock=clock)
    other = "nbd;mem=0;disk=0"
    reasons.to_store({KIND: busy(3)}, busy={KIND})
    clock.now += 0.5
    chosen = reasons.to_store({KIND: busy(4), other: "no agent has nbd"}, busy={KIND})
    assert chosen == {KIND: busy(3), other: "no agent has nbd"}
