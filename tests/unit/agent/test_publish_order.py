"""The pure part of migration_publish: planning a (resumed) publish, renaming with roll back."""

from __future__ import annotations

import asyncio
import re

import pytest

from agent.errors import InputNotFound, OutputExists
from agent.ops.publish_order import (
    NameState,
    RenameFailed,
    plan_publish,
    rename_in_order,
)
from protocol.migration_jobs import PublishFile, staged_name

S = NameState


def _file(final: str, kind: str = "disk") -> PublishFile:
    fmt = "qcow2" if kind == "disk" else None
    return PublishFile.model_validate(
        {"staged": staged_name("m1", final), "final": final, "kind": kind, "format": fmt}
    )


DATA = _file("vm-disk2.qcow2")
XML = _file("vm.xml", "definition")
BOOT = _file("vm.qcow2")
FILES = [DATA, XML, BOOT]


def _states(*states: NameState) -> dict[str, NameState]:
    return {f.staged: s for f, s in zip(FILES, states, strict=True)}


def test_fresh_publish_renames_everything_in_order() -> None:
    plan = plan_publish(FILES, _states(S.STAGED, S.STAGED, S.STAGED))
    assert plan.pending == FILES and plan.published == [] and not plan.resumed


def test_a_missing_document_is_written_by_the_job() -> None:
    plan = plan_publish(FILES, _states(S.STAGED, S.MISSING, S.STAGED), {XML.staged})
    assert plan.pending == FILES


def test_a_missing_disk_is_refused() -> None:
    with pytest.raises(InputNotFound, match=BOOT.staged):
        plan_publish(FILES, _states(S.STAGED, S.STAGED, S.MISSING))


def test_a_final_next_to_its_staged_file_is_a_conflict() -> None:
    with pytest.raises(OutputExists, match=re.escape("vm.xml already exists")):
        plan_publish(FILES, _states(S.STAGED, S.CONFLICT, S.STAGED))


def test_completed_publish_has_nothing_left() -> None:
    plan = plan_publish(FILES, _states(S.PUBLISHED, S.PUBLISHED, S.PUBLISHED))
    assert plan.published == FILES and plan.pending == [] and plan.resumed


def test_crashed_publish_resumes_after_the_published_prefix() -> None:
    plan = plan_publish(FILES, _states(S.PUBLISHED, S.INTERRUPTED, S.STAGED))
    assert plan.published == [DATA, XML]
    assert plan.interrupted == [XML]
    assert plan.pending == [BOOT]


def test_a_final_out_of_order_was_not_made_by_this_publish() -> None:
    # The boot disk's final exists while the data disk is still staged: someone else's file.
    with pytest.raises(OutputExists, match=re.escape("vm.qcow2 already exists while")):
        plan_publish(FILES, _states(S.STAGED, S.STAGED, S.PUBLISHED))


class FakeDir:
    """Names moved by rename_in_order, failing on the n-th move."""

    def __init__(self, fail_on: str | None = None, exc: BaseException | None = None) -> None:
        self.names = {f.staged for f in FILES}
        self.fail_on = fail_on
        self.exc = exc or OSError(5, "Input/output error")
        self.log: list[tuple[str, str]] = []

    def move(self, source: str, target: str) -> None:
        if target == self.fail_on:
            raise self.exc
        assert source in self.names and target not in self.names
        self.names.remove(source)
        self.names.add(target)
        self.log.append((source, target))


def test_renames_follow_the_order_and_report_each_file() -> None:
    fake = FakeDir()
    seen: list[str] = []
    rename_in_order(FILES, fake.move, lambda f: seen.append(f.final))
    assert seen == ["vm-disk2.qcow2", "vm.xml", "vm.qcow2"]
    assert fake.names == {f.final for f in FILES}


def test_a_failed_rename_rolls_back_the_earlier_ones_newest_first() -> None:
    fake = FakeDir(fail_on="vm.qcow2")
    with pytest.raises(RenameFailed, match=re.escape("rolled back vm-disk2.qcow2, vm.xml")) as exc:
        rename_in_order(FILES, fake.move, lambda f: None)
    assert exc.value.phase == "publish"
    assert fake.names == {f.staged for f in FILES}
    assert fake.log[-2:] == [("vm.xml", XML.staged), ("vm-disk2.qcow2", DATA.staged)]


def test_a_final_appearing_meanwhile_is_output_exists_after_roll_back() -> None:
    fake = FakeDir(fail_on="vm.xml", exc=OutputExists("vm.xml already exists"))
    with pytest.raises(OutputExists, match=re.escape("rolled back vm-disk2.qcow2")):
        rename_in_order(FILES, fake.move, lambda f: None)
    assert fake.names == {f.staged for f in FILES}


def test_cancellation_mid_way_rolls_back_and_propagates() -> None:
    def cancel_after_second(file: PublishFile) -> None:
        if file is XML:
            raise asyncio.CancelledError

    fake = FakeDir()
    with pytest.raises(asyncio.CancelledError):
        rename_in_order(FILES, fake.move, cancel_after_second)
    assert fake.names == {f.staged for f in FILES}


def test_a_roll_back_that_fails_is_named() -> None:
    class Stubborn(FakeDir):
        def move(self, source: str, target: str) -> None:
            if target == DATA.staged:
                raise OSError(30, "Read-only file system")
            super().move(source, target)

    fake = Stubborn(fail_on="vm.qcow2")
    with pytest.raises(RenameFailed, match=re.escape("could not roll back vm-disk2.qcow2")):
        rename_in_order(FILES, fake.move, lambda f: None)
