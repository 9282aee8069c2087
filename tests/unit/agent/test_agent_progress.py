"""qemu-img progress parsing and progress-event throttling (pure logic, no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.disk.qemu_img import convert_argv, parse_progress
from agent.events import EventLog, JobEvents
from agent.progress import ProgressReporter


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("    (0.00/100%)", 0.0),
        ("    (12.34/100%)", 12.34),
        ("(100.00/100%)", 100.0),
        ("    ( 7.5/100%)", 7.5),
        ("qemu-img: warning: something", None),
        ("", None),
    ],
)
def test_parse_progress_reads_qemu_img_percent(line: str, expected: float | None) -> None:
    assert parse_progress(line) == expected


def test_convert_argv_uses_out_of_order_writes_only_with_compression() -> None:
    plain = convert_argv(Path("/i/a.vmdk"), "vmdk", Path("/o/a.raw"), "raw", compress=False)
    packed = convert_argv(Path("/i/a.vmdk"), "vmdk", Path("/o/a.qcow2"), "qcow2", compress=True)
    assert "-W" not in plain and "-c" not in plain
    assert "-c" in packed and "-W" in packed
    assert plain[-2:] == ["/i/a.vmdk", "/o/a.raw"]
    assert plain[plain.index("-f") : plain.index("-f") + 2] == ["-f", "vmdk"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _reporter(tmp_path: Path, clock: FakeClock) -> tuple[ProgressReporter, EventLog]:
    log = EventLog(tmp_path)
    events = JobEvents(log, job_id="j", attempt=1, agent="n", start_seq=1)
    return ProgressReporter(events, min_interval=0.1, clock=clock), log


def test_progress_never_decreases_and_is_throttled(tmp_path: Path) -> None:
    clock = FakeClock()
    reporter, log = _reporter(tmp_path, clock)
    assert reporter.report("convert", 10)
    clock.now += 0.01
    assert not reporter.report("convert", 20), "within 100 ms of the last event"
    clock.now += 0.2
    assert not reporter.report("convert", 5), "lower percent is clamped, so unchanged"
    assert reporter.report("convert", 30)
    clock.now += 0.2
    assert not reporter.report("convert", 30), "same percent is not repeated"
    assert reporter.report("finalize", 30), "a phase change always goes out"
    percents = [e.progress_percent for e in log.read_after("j")]
    assert percents == [10, 30, 30]
    assert [e.seq for e in log.read_after("j")] == [1, 2, 3]
