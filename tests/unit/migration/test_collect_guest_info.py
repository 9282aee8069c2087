"""pipeline.inspect.collect_guest_info: carried to the boot disk's repair job as
parameters.guest_info, and said in the notes what it does (or why it does nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.migrations import plan
from controlplane.migrations.intake import checked_spec
from migration.manifest import read_manifest
from migration.model import MigrationProblem
from migration.wire import manifest_notes, pipeline_from_manifest
from protocol.gen.h2k.v1 import migration_pb2 as S

DATA = Path(__file__).parent / "data"


def _parsed(inspect: dict, fix_enabled: bool = True):  # type: ignore[no-untyped-def]
    document = json.loads((DATA / "azure-manifest.json").read_text())
    document["pipeline"]["inspect"] = inspect
    document["pipeline"]["fix"]["enabled"] = fix_enabled
    return read_manifest(json.dumps(document), path_exists=lambda _: True)


@pytest.mark.parametrize(
    ("inspect", "fix", "collected"),
    [
        ({"enabled": True}, True, True),  # HyperSDK's default: collect_guest_info true
        ({"enabled": True, "collect_guest_info": False}, True, False),
        ({"enabled": False}, True, False),
        ({"enabled": True}, False, False),  # nothing mounts the guest without the repair
    ],
)
def test_collect_guest_info_reaches_the_pipeline(inspect: dict, fix: bool, collected: bool) -> None:
    parsed = _parsed(inspect, fix)
    assert pipeline_from_manifest(parsed).collect_guest_info is collected
    notes = [n for n in manifest_notes(parsed) if n.startswith("pipeline.inspect.collect")]
    if inspect.get("enabled") and inspect.get("collect_guest_info", True):
        [note] = notes
        assert ("disks[].guest_info" in note) is fix
        assert ("not collected" in note) is not fix


def _spec(collect: bool) -> S.MigrationSpec:
    return S.MigrationSpec(
        migration_id="m1",
        vm=S.VmDefinition(
            name="web-01",
            disks=[
                S.VmDisk(id="disk-0", path="/in/a.vmdk", source_format="vmdk", capacity_bytes=10),
                S.VmDisk(id="disk-1", path="/in/b.vmdk", source_format="vmdk", capacity_bytes=10),
            ],
        ),
        pipeline=S.MigrationPipeline(
            repair=True, fstab_mode="stabilize-all", collect_guest_info=collect
        ),
        output_directory="/out",
    )


@pytest.mark.parametrize("collect", [True, False])
def test_only_the_boot_disks_repair_job_describes_the_guest(collect: bool) -> None:
    spec = checked_spec(_spec(collect), "a")
    jobs = {s.role: plan.disk_job(spec, s, None) for s in plan.disk_steps(spec)}
    assert jobs["repair"].parameters.get("guest_info", False) is collect
    assert "guest_info" not in jobs["convert"].parameters


def _with_validate(validate: dict, fix_enabled: bool = True):  # type: ignore[no-untyped-def]
    document = json.loads((DATA / "azure-manifest.json").read_text())
    document["pipeline"]["validate"] = validate
    document["pipeline"]["fix"]["enabled"] = fix_enabled
    return read_manifest(json.dumps(document), path_exists=lambda _: True)


def test_validate_boot_check_reaches_the_pipeline_and_only_the_repair_job() -> None:
    parsed = _with_validate({"enabled": True, "boot_check": True})
    assert pipeline_from_manifest(parsed).boot_check is True
    assert pipeline_from_manifest(_with_validate({"enabled": True})).boot_check is False
    spec = _spec(False)
    spec.pipeline.boot_check = True
    checked = checked_spec(spec, "a")
    jobs = {s.role: plan.disk_job(checked, s, None) for s in plan.disk_steps(checked)}
    assert jobs["repair"].parameters["boot_check"] is True
    assert "boot_check" not in jobs["convert"].parameters


@pytest.mark.parametrize(
    ("validate", "fix"),
    [
        ({"enabled": True, "boot_check": True}, False),
        ({"enabled": False, "boot_check": True}, True),
    ],
)
def test_a_boot_check_without_the_repair_or_validate_is_refused_naming_it(
    validate: dict, fix: bool
) -> None:
    with pytest.raises(MigrationProblem, match=r"pipeline\.validate\.boot_check: needs"):
        _with_validate(validate, fix)
