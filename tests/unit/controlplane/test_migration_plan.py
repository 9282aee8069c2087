"""The pure parts of migrations: what a spec must hold, the jobs of each stage, what the
report says each option did."""

from __future__ import annotations

import pytest

from controlplane.migrations import plan
from controlplane.migrations.intake import checked_spec
from controlplane.migrations.report import option_effects
from controlplane.migrations.service import new_record
from protocol.errors import InvalidArgument
from protocol.gen.h2k.v1 import migration_pb2 as S
from protocol.migration_jobs import disk_job_parameters, staged_name


def spec(**fields) -> S.MigrationSpec:
    m = S.MigrationSpec(
        migration_id="m1",
        vm=S.VmDefinition(
            name="web-01",
            disks=[
                S.VmDisk(id="disk-0", path="/in/a.vmdk", source_format="vmdk", capacity_bytes=10),
                S.VmDisk(id="disk-2", path="/in/b.vmdk", source_format="vmdk", offset=512, size=99),
            ],
            nics=[S.VmNic(id="nic-0", mac="00:50:56:ab:cd:ef", network="VM Network")],
        ),
        pipeline=S.MigrationPipeline(repair=True, fstab_mode="stabilize-all", update_grub=True),
        output_directory="/out",
        **fields,
    )
    m.network_map["VM Network"].libvirt_bridge = "br0"
    return m


def test_every_problem_of_a_spec_is_named_with_its_field():
    bad = spec(output_format="vdi")
    bad.vm.name = "../etc"
    bad.vm.disks[1].id = "disk-0"
    bad.vm.nics[0].mac = "nope"
    bad.pipeline.fstab_mode = "bypath-only"
    with pytest.raises(InvalidArgument) as err:
        checked_spec(bad, "alice", "specs[3].")
    message = err.value.message
    for expected in (
        "specs[3].vm.name",
        "specs[3].vm.disks[1].id: 'disk-0' is used by vm.disks[0] too",
        "specs[3].vm.nics[0].mac",
        "specs[3].output_format: 'vdi' is not written by h2k",
        "specs[3].pipeline.fstab_mode: 'bypath-only' is not supported",
    ):
        assert expected in message


def test_defaults_are_filled_in_and_the_requester_is_the_caller():
    claimed = spec()
    claimed.audit.requested_by = "mallory"
    done = checked_spec(claimed, "alice")
    assert done.output_format == "qcow2" and done.vm.firmware == "bios"
    assert done.source_key == "unknown/unknown"
    assert done.audit.requested_by == "alice"
    assert done.audit.tags["h2k.claimed_requested_by"] == "mallory"


def test_data_disks_come_first_and_the_boot_disks_repair_attaches_them():
    done = checked_spec(spec(), "alice")
    steps = plan.disk_steps(done)
    assert [(s.disk_id, s.role) for s in steps] == [("disk-2", "convert"), ("disk-0", "repair")]
    repair = plan.disk_job(done, steps[1], "node-1")
    assert repair.operation.value == "offline_fix"
    assert repair.requested_actions == ["fstab_uuid", "grub_root_uuid"]
    params = disk_job_parameters(repair)
    assert params is not None and params.pinned_agent == "node-1"
    assert params.output_name == staged_name("m1", "web-01.qcow2")
    assert [a.path for a in params.attach_outputs] == [
        "/out/" + staged_name("m1", "web-01-disk-2.qcow2")
    ]
    data = disk_job_parameters(plan.disk_job(done, steps[0], None))
    assert data is not None and (data.source_offset, data.source_size) == (512, 99)
    files = plan.published_files(done)
    assert files[-1]["final"] == "web-01.qcow2"  # HyperSDK's success signal comes last
    assert [f["final"] for f in files[:-1]] == [
        "web-01-disk-2.qcow2",
        "web-01.xml",
        "web-01.kubevirt.yaml",
        "web-01.report.json",
    ]


def test_without_repair_every_disk_is_converted_and_a_dry_run_writes_no_disk():
    no_fix = spec()
    no_fix.pipeline.repair = False
    assert {s.role for s in plan.disk_steps(checked_spec(no_fix, "a"))} == {"convert"}
    dry = checked_spec(spec(dry_run=True), "a")
    assert [s.role for s in plan.disk_steps(dry)] == ["repair"]
    assert plan.disk_job(dry, plan.disk_steps(dry)[0], None).parameters["dry_run"] is True


def test_the_report_says_what_each_option_did():
    effects = option_effects(new_record(checked_spec(spec(), "a")))
    assert "fstab_uuid, grub_root_uuid" in effects["pipeline.repair"]
    assert effects["pipeline.fstab_mode"].startswith("fstab and crypttab")


def test_a_migration_whose_job_ids_would_be_too_long_is_refused_before_anything_is_stored():
    long = spec()
    long.migration_id = "m" * 90
    long.vm.disks[1].id = "d" * 60
    with pytest.raises(InvalidArgument) as err:
        checked_spec(long, "a")
    assert "vm.disks[1].id: the job id" in err.value.message and "at most 128" in err.value.message


def test_a_manifests_disk_bytes_reach_the_disk_job_as_image_size_bytes():
    sized = spec()
    sized.vm.disks[0].file_bytes = 4096
    checked = checked_spec(sized, "a")
    jobs = {s.disk_id: plan.disk_job(checked, s, None) for s in plan.disk_steps(checked)}
    assert jobs["disk-0"].image.size_bytes == 4096
    assert jobs["disk-2"].image.size_bytes is None  # bytes unknown: nothing to check
