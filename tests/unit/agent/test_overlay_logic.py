"""Pure parts of the overlay pipeline: command lines, extents, parameters, the journal."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from agent.disk.attach import AttachedPartition
from agent.disk.journal import AttachmentJournal, read_journals
from agent.disk.leftovers import release_leftovers
from agent.disk.overlay import (
    OVERLAY_NAME,
    Extent,
    Overlay,
    bytes_within,
    create_argv,
    data_extents,
    kept_extents,
    merged,
    remove_overlay,
    subtract,
)
from agent.disk.storage_daemon import export_argv
from agent.errors import InvalidSpec
from agent.ops.base import JobContext
from agent.ops.sparsify import convert_sparsify_requested, sparsify_parameter
from agent.paths import PathPolicy
from agent.repair.actions import RepairPlan
from agent.repair.reclaim import TrimResult
from agent.repair.runner import phases_for
from devsupport.specs import job_spec
from protocol.spec import Operation, parse_spec


def _nodes(argv: list[str]) -> list[dict]:
    return [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "--blockdev"]


def test_a_discarding_export_asks_both_nodes_to_unmap(tmp_path: Path) -> None:
    argv = export_argv(Path("/s/o.qcow2"), "qcow2", tmp_path / "m", tmp_path / "p", True, True)
    assert [n.get("discard") for n in _nodes(argv)] == ["unmap", "unmap"]


@pytest.mark.parametrize(("writable", "discard"), [(True, False), (False, True)])
def test_discard_is_off_unless_asked_on_a_writable_export(
    tmp_path: Path, writable: bool, discard: bool
) -> None:
    argv = export_argv(Path("/s/o"), "qcow2", tmp_path / "m", tmp_path / "p", writable, discard)
    assert all("discard" not in n for n in _nodes(argv))


def test_the_overlay_names_its_backing_and_format() -> None:
    backing = 'json:{"file": {"driver": "raw", "offset": 512, "size": 4096}}'
    argv = create_argv(Path("/w/overlay.qcow2"), backing, "vmdk", 1 << 30)
    assert argv[:5] == ["qemu-img", "create", "-q", "-f", "qcow2"]
    assert argv[argv.index("-F") + 1] == "vmdk"
    assert argv[argv.index("-b") + 1] == backing
    assert argv[-2:] == ["/w/overlay.qcow2", str(1 << 30)]


def test_bytes_within_counts_only_the_window() -> None:
    extents = [Extent(0, 100), Extent(200, 100), Extent(1000, 50)]
    assert bytes_within(extents, 50, 200) == 50 + 50
    assert bytes_within(extents, 300, 700) == 0
    assert bytes_within(extents, 0, 2000) == 250


def test_subtract_cuts_every_hole_out_and_keeps_the_rest() -> None:
    extents = [Extent(1000, 100), Extent(0, 100), Extent(200, 300)]
    holes = [Extent(250, 10), Extent(50, 200), Extent(480, 600), Extent(260, 5)]
    assert subtract(extents, holes) == [Extent(0, 50), Extent(265, 215), Extent(1080, 20)]
    assert subtract(extents, []) == [Extent(0, 100), Extent(200, 300), Extent(1000, 100)]
    assert subtract([], holes) == []


def test_merged_joins_overlapping_and_touching_extents() -> None:
    assert merged([Extent(10, 5), Extent(0, 10), Extent(12, 10), Extent(30, 1)]) == [
        Extent(0, 22),
        Extent(30, 1),
    ]


MiB = 1024 * 1024


def _qemu_io(image: Path, *commands: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        argv += ["-c", command]
    subprocess.run([*argv, str(image)], check=True, capture_output=True)


def test_kept_extents_of_an_overlay_equal_its_full_map(tmp_path: Path) -> None:
    """What the overlay itself holds, laid over the backing's map, is exactly what mapping
    the overlay through its backing says: written clusters, zero clusters hiding data
    beneath, discards, and the backing's data where the overlay holds nothing."""
    backing = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(backing), "64M"], check=True)
    _qemu_io(backing, "write -P 1 0 8M", "write -P 2 16M 4M", "write -P 3 40M 1M")
    overlay_path = tmp_path / OVERLAY_NAME
    argv = create_argv(overlay_path, str(backing), "qcow2", 64 * MiB)
    subprocess.run(argv, check=True)
    # Data over data, zeros over data, a discard, data where the backing has none.
    _qemu_io(overlay_path, "write -P 9 1M 64k", "write -z 2M 3M", "discard 17M 1M")
    _qemu_io(overlay_path, "write -P 8 30M 2M", "write -z 48M 1M")
    overlay = Overlay(overlay_path, str(backing), "qcow2", 64 * MiB)

    source = asyncio.run(data_extents(backing, "qcow2"))
    kept = asyncio.run(kept_extents(overlay, source))
    full = asyncio.run(data_extents(overlay_path, "qcow2"))
    assert kept == merged(full)
    assert sum(e.length for e in kept) == (8 - 3 + 4 - 1 + 1 + 2) * MiB


def test_reclaimed_bytes_is_what_the_output_no_longer_holds() -> None:
    partition = AttachedPartition(1, 1000, 1000, "/dev/loop9", fstype="ext4")
    result = TrimResult("/", partition, "trimmed", discarded_bytes=900)
    result.account([Extent(0, 2000)], [Extent(900, 300)])
    assert (result.allocated_before, result.allocated_after) == (1000, 200)
    assert result.reclaimed_bytes == 800
    assert result.describe()["reclaimed_bytes"] == 800


def _spec(**parameters: object):  # type: ignore[no-untyped-def]
    return parse_spec(job_spec("offline_fix", parameters=parameters))


def test_sparsify_defaults_and_refuses_what_is_not_a_boolean() -> None:
    assert sparsify_parameter(_spec(), default=True) is True
    assert sparsify_parameter(_spec(), default=False) is False
    assert sparsify_parameter(_spec(sparsify=False), default=True) is False
    with pytest.raises(InvalidSpec, match=r"^parameters.sparsify: must be true or false"):
        sparsify_parameter(_spec(sparsify="no"), default=True)


def test_trim_comes_after_the_repairs_and_before_detaching() -> None:
    plan = RepairPlan(Operation.BOOT_REPAIR, ("fstab_uuid",), False, False, True, True)
    assert phases_for(plan, trim=True)[-2:] == ["trim", "detach"]
    assert "trim" not in phases_for(plan)


def test_only_a_file_named_as_an_overlay_is_removed(tmp_path: Path) -> None:
    work = tmp_path / "repair-job"
    (work / "root").mkdir(parents=True)
    other = work / "disk.qcow2"
    other.write_bytes(b"x")
    remove_overlay(other)
    assert other.exists()
    other.unlink()
    (work / OVERLAY_NAME).write_bytes(b"x")
    remove_overlay(work / OVERLAY_NAME)
    assert not work.exists()  # the empty work directory goes with it


def test_recovery_removes_a_journaled_overlay(tmp_path: Path) -> None:
    state = tmp_path / "state"
    work = state / "tmp" / "repair-crashed"
    work.mkdir(parents=True)
    overlay = work / OVERLAY_NAME
    overlay.write_bytes(b"qcow2 overlay")
    journal = AttachmentJournal(state, "crashed")
    journal.add({"kind": "overlay", "path": str(overlay)})
    assert release_leftovers(state) == 1
    assert not overlay.exists() and not work.exists()
    assert read_journals(state) == {}


def _convert_ctx(tmp_path: Path, needs_mount: bool, **parameters: object) -> JobContext:
    doc = job_spec(
        "convert",
        parameters={"output_format": "qcow2", **parameters},
        capability_requirements={"needs_mount": needs_mount},
    )
    policy = PathPolicy([tmp_path], [tmp_path])
    return JobContext(parse_spec(doc), tmp_path / "in", tmp_path, tmp_path, policy, None)  # type: ignore[arg-type]


MIGRATION = {"migration_id": "m-1", "disk_id": "disk-0", "output_name": "vm.qcow2"}


@pytest.mark.parametrize(
    ("needs_mount", "parameters", "message"),
    [
        (False, {"sparsify": True}, "parameters.sparsify: trimming mounts"),
        (
            True,
            {"sparsify": True, "migration": {**MIGRATION, "verify_content": True}},
            "parameters.sparsify: cannot be combined with parameters.migration.verify_content",
        ),
    ],
)
def test_convert_refuses_a_sparsify_it_cannot_honour(
    tmp_path: Path, needs_mount: bool, parameters: dict, message: str
) -> None:
    with pytest.raises(InvalidSpec, match=f"^{message}"):
        convert_sparsify_requested(_convert_ctx(tmp_path, needs_mount, **parameters))


def test_convert_keeps_every_block_unless_asked(tmp_path: Path) -> None:
    assert convert_sparsify_requested(_convert_ctx(tmp_path, False)) is False
    assert convert_sparsify_requested(_convert_ctx(tmp_path, True, sparsify=True)) is True
