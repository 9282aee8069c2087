"""When a drop is complete: stable size and mtime across the settle interval, and JSON."""

from __future__ import annotations

from intake.settle import FileStamp, SettleTracker, Verdict

WHOLE = b'{"manifest_version": "1.0"}'


def test_a_stable_json_drop_is_ready_after_the_settle_interval() -> None:
    t = SettleTracker(settle_seconds=2, grace_seconds=60)
    stamp = FileStamp(1, len(WHOLE), 10)
    assert t.observe("m.json", stamp, 0.0) is Verdict.WAIT
    assert t.observe("m.json", stamp, 1.0) is Verdict.WAIT
    assert t.observe("m.json", stamp, 2.0) is Verdict.READY
    assert t.confirm("m.json", WHOLE, 2.0) is Verdict.READY


def test_a_growing_drop_waits_and_starts_its_interval_again() -> None:
    t = SettleTracker(settle_seconds=2, grace_seconds=60)
    t.observe("m.json", FileStamp(1, 5, 10), 0.0)
    assert t.observe("m.json", FileStamp(1, 9, 11), 1.9) is Verdict.WAIT
    assert t.observe("m.json", FileStamp(1, 9, 11), 3.0) is Verdict.WAIT
    assert t.observe("m.json", FileStamp(1, 9, 11), 3.9) is Verdict.READY


def test_a_stable_half_document_waits_then_expires_at_the_grace() -> None:
    t = SettleTracker(settle_seconds=1, grace_seconds=10)
    half = WHOLE[:10]
    stamp = FileStamp(1, len(half), 10)
    t.observe("m.json", stamp, 0.0)
    assert t.observe("m.json", stamp, 5.0) is Verdict.READY
    assert t.confirm("m.json", half, 5.0) is Verdict.WAIT
    assert t.confirm("m.json", half, 10.0) is Verdict.EXPIRED
    assert t.problem("m.json").startswith("not JSON")


def test_a_drop_that_never_stops_changing_expires() -> None:
    t = SettleTracker(settle_seconds=2, grace_seconds=5)
    t.observe("m.json", FileStamp(1, 1, 1), 0.0)
    assert t.observe("m.json", FileStamp(1, 2, 2), 5.0) is Verdict.EXPIRED
    assert t.problem("m.json") == "still being written"


def test_a_new_file_at_the_same_name_is_a_new_drop() -> None:
    t = SettleTracker(settle_seconds=1, grace_seconds=5)
    t.observe("m.json", FileStamp(1, 1, 1), 0.0)
    assert t.observe("m.json", FileStamp(2, 1, 1), 4.9) is Verdict.WAIT
    assert t.observe("m.json", FileStamp(2, 1, 1), 9.0) is Verdict.READY  # grace from 4.9
    t.forget_missing(set())
    assert not t.pending
