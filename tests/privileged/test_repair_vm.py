"""A VM migration's repair sees the whole guest: its other disks are attached with the boot disk.

Two-disk guests built like VMware leaves them (fstab naming ``/dev/sdXN``): the data disk is
converted first into the output directory (as the migration's data-disk job would), then a
repair job of the other disk names it in ``parameters.migration.attach_outputs``. Every output
is read back independently (converted to raw, loop-attached read-only, blkid).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devsupport.cluster import Cluster, wait_for
from protocol.migration_jobs import staged_name
from tests.support.guests import OpenedDisk, PartitionSpec, build_disk, opened_readonly
from tests.support.repair_checks import is_clean, leftovers, sha256
from tests.support.repair_jobs import action, repair_spec, run_job, submit

MIGRATION = "mig-1"
RELEASE = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
VAR_MARKER = "written by the guest on /var\n"


@dataclass(frozen=True)
class TwoDiskVm:
    first: Path  # VMDK of the guest's sda
    second: Path  # VMDK of the guest's sdb


def _root_tree(fstab: str) -> dict[str, Any]:
    return {
        "/etc/os-release": RELEASE,
        "/etc/fstab": fstab,
        "/var/": "",
        "/srv/": "",
        "/proc/": "",
        "/sys/": "",
        "/dev/": "",
    }


def _disk(target: Path, tree: dict[str, Any]) -> Path:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        build_disk(target, "dos", [PartitionSpec("ext4", 48, tree)], Path(scratch))
    return target


@pytest.fixture(scope="module")
def root_first(repair_cluster: Cluster) -> TwoDiskVm:
    """sda1: the root, naming itself /dev/sda1 and /var as /dev/sdb1; sdb1: /var."""
    directory = repair_cluster.input_dir / "vm-root-first"
    directory.mkdir()
    fstab = (
        "/dev/sda1  /     ext4  defaults  0 1\n"
        "/dev/sdb1  /var  ext4  defaults  0 2\n"
        "tmpfs      /tmp  tmpfs defaults  0 0\n"
    )
    first = _disk(directory / "vm1.vmdk", _root_tree(fstab))
    second = _disk(directory / "vm1-var.vmdk", {"/log/marker": VAR_MARKER})
    return TwoDiskVm(first, second)


@pytest.fixture(scope="module")
def root_second(repair_cluster: Cluster) -> TwoDiskVm:
    """sda1: /srv (the disk the job repairs); sdb1: the root."""
    directory = repair_cluster.input_dir / "vm-root-second"
    directory.mkdir()
    fstab = "/dev/sdb1  /     ext4  defaults  0 1\n/dev/sda1  /srv  ext4  defaults  0 2\n"
    first = _disk(directory / "vm2.vmdk", {"/www/index.html": "hello\n"})
    second = _disk(directory / "vm2-root.vmdk", _root_tree(fstab))
    return TwoDiskVm(first, second)


def _convert_data_disk(source: Path, outdir: Path, final_name: str) -> Path:
    """What the migration's data-disk job leaves: a staged qcow2 in the output directory."""
    target = outdir / staged_name(MIGRATION, final_name)
    subprocess.run(
        ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(source), str(target)],
        check=True,
        timeout=120,
    )
    return target


def _vm_repair(
    operation: str, disk: Path, outdir: Path, attach: list[dict[str, str]], **params: Any
) -> dict[str, Any]:
    migration = {
        "migration_id": MIGRATION,
        "disk_id": "disk-0",
        # The convert path's own name for it, so this holds however the output is named.
        "output_name": f"{disk.stem}.qcow2",
        "attach_outputs": attach,
    }
    return repair_spec(operation, disk, outdir, migration=migration, **params)


def _attach(path: Path, disk_id: str = "disk-1") -> dict[str, str]:
    return {"disk_id": disk_id, "path": str(path), "format": "qcow2"}


def _scratch(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return directory


def _fstab(disk: OpenedDisk) -> dict[str, str]:
    text = disk.read(1, "/etc/fstab") or ""
    rows = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    return {row[1]: row[0] for row in rows}


def _assert_node_clean(cluster: Cluster) -> None:
    assert is_clean(cluster.workdir), leftovers(cluster.workdir)
    journal = cluster.workdir / "node-1" / "attachments"
    assert not journal.exists() or not list(journal.iterdir())


def _mountpoints(report: dict[str, Any]) -> dict[tuple[int, int], str | None]:
    return {
        (p["disk"], p["number"]): p["mountpoint"]
        for disk in report["disks"]
        for p in disk["partitions"]
    }


def test_offline_fix_rewrites_a_second_disks_device_name(
    repair_cluster: Cluster, root_first: TwoDiskVm, outdir: Path, tmp_path: Path
) -> None:
    var_disk = _convert_data_disk(root_first.second, outdir, "vm1-disk-1.qcow2")
    doc = _vm_repair("offline_fix", root_first.first, outdir, [_attach(var_disk)])
    result = run_job(repair_cluster, doc)
    assert result["state"] == "COMPLETED", result["result"]
    report = result["result"]["details"]  # a migration job writes no report file
    with opened_readonly(var_disk, "qcow2", _scratch(tmp_path, "var")) as var:
        var_uuid = var.blkid[1]["UUID"]
        assert var.read(1, "/log/marker") == VAR_MARKER  # mounted read-write, left intact
    with opened_readonly(outdir / "vm1.qcow2", "qcow2", _scratch(tmp_path, "root")) as root:
        root_uuid = root.blkid[1]["UUID"]
        fstab = _fstab(root)
    assert fstab == {"/": f"UUID={root_uuid}", "/var": f"UUID={var_uuid}", "/tmp": "tmpfs"}
    notes = action(report, "fstab_uuid")["notes"]
    assert f"fstab: /dev/sdb1 (/var) -> UUID={var_uuid}" in notes
    disks = report["disks"]
    assert [(d["index"], d["disk_id"], d["guest_name"], d["holds_root"]) for d in disks] == [
        (0, "disk-0", "/dev/sda", True),
        (1, "disk-1", "/dev/sdb", False),
    ]
    assert disks[1]["image"] == str(var_disk) and disks[1]["writable"] is True
    assert _mountpoints(report) == {(0, 1): "/", (1, 1): "/var"}
    assert report["guest"]["root_device"]["disk"] == 0
    checked = {(r["disk"], r["partition"]): r["result"] for r in report["filesystem_checks"]}
    assert checked == {(0, 1): "clean", (1, 1): "clean"}
    _assert_node_clean(repair_cluster)


def test_the_root_is_found_on_the_second_disk_and_repaired_there(
    repair_cluster: Cluster, root_second: TwoDiskVm, outdir: Path, tmp_path: Path
) -> None:
    root_disk = _convert_data_disk(root_second.second, outdir, "vm2-disk-1.qcow2")
    doc = _vm_repair("boot_repair", root_second.first, outdir, [_attach(root_disk)])
    result = run_job(repair_cluster, doc)
    assert result["state"] == "COMPLETED", result["result"]
    report = result["result"]["details"]  # a migration job writes no report file
    with opened_readonly(outdir / "vm2.qcow2", "qcow2", _scratch(tmp_path, "srv")) as srv:
        srv_uuid = srv.blkid[1]["UUID"]
        assert srv.read(1, "/www/index.html") == "hello\n"
    with opened_readonly(root_disk, "qcow2", _scratch(tmp_path, "root")) as root:
        root_uuid = root.blkid[1]["UUID"]
        assert _fstab(root) == {"/": f"UUID={root_uuid}", "/srv": f"UUID={srv_uuid}"}
    assert [d["holds_root"] for d in report["disks"]] == [False, True]
    assert report["guest"]["root_device"] == {
        "fstab_spec": "/dev/sdb1",
        "disk": 1,
        "partition": 1,
        "uuid": root_uuid,
        "fstype": "ext4",
    }
    assert report["guest"]["guest_disk_name"] == "/dev/sdb"
    assert _mountpoints(report) == {(0, 1): "/srv", (1, 1): "/"}
    _assert_node_clean(repair_cluster)


def test_dry_run_with_attached_disks_writes_nothing(
    repair_cluster: Cluster, root_first: TwoDiskVm, outdir: Path
) -> None:
    var_disk = _convert_data_disk(root_first.second, outdir, "vm1-disk-1.qcow2")
    before = sha256(var_disk)
    doc = _vm_repair("boot_repair", root_first.first, outdir, [_attach(var_disk)], dry_run=True)
    result = run_job(repair_cluster, doc)
    assert result["state"] == "COMPLETED", result["result"]
    report = result["result"]["details"]  # a migration job writes no report file
    assert action(report, "fstab_uuid")["status"] == "would_apply"
    diff = next(f["diff"] for f in report["files"] if f["path"] == "/etc/fstab")
    assert "-/dev/sdb1  /var" in diff and "+UUID=" in diff
    assert [d["writable"] for d in report["disks"]] == [False, False]
    assert sha256(var_disk) == before
    assert sorted(p.name for p in outdir.iterdir()) == [var_disk.name]
    _assert_node_clean(repair_cluster)


def _refused(
    cluster: Cluster, vm: TwoDiskVm, outdir: Path, attach: dict[str, str]
) -> dict[str, Any]:
    before = set(outdir.iterdir())
    doc = _vm_repair("offline_fix", vm.first, outdir, [attach])
    result = run_job(cluster, doc)
    assert result["state"] == "FAILED", result
    assert set(outdir.iterdir()) == before  # no output, no temporary file, no report
    _assert_node_clean(cluster)
    error: dict[str, Any] = result["result"]["error"]
    return error


def test_an_attach_output_outside_allow_output_is_refused(
    repair_cluster: Cluster, root_first: TwoDiskVm, outdir: Path
) -> None:
    error = _refused(repair_cluster, root_first, outdir, _attach(root_first.second))
    assert error["code"] == "PATH_NOT_ALLOWED"
    assert error["message"].startswith("parameters.migration.attach_outputs[0].path: ")
    assert "outside the allowed output directories" in error["message"]


def test_a_missing_or_symlinked_attach_output_is_refused(
    repair_cluster: Cluster, root_first: TwoDiskVm, outdir: Path
) -> None:
    missing = outdir / "vm1-disk-1.qcow2"
    error = _refused(repair_cluster, root_first, outdir, _attach(missing))
    assert error["code"] == "PATH_NOT_ALLOWED"
    assert error["message"] == (
        f"parameters.migration.attach_outputs[0].path: {missing} does not exist"
    )
    real = _convert_data_disk(root_first.second, outdir, "vm1-disk-1.qcow2")
    link = outdir / "link.qcow2"
    os.symlink(real, link)
    error = _refused(repair_cluster, root_first, outdir, _attach(link))
    assert error["code"] == "PATH_NOT_ALLOWED" and "is a symlink; refused" in error["message"]


def test_no_root_on_any_disk_fails_and_releases_both_disks(
    repair_cluster: Cluster, root_first: TwoDiskVm, root_second: TwoDiskVm, outdir: Path
) -> None:
    """Both disks are attached (and their partitions mounted as candidates) before it fails."""
    data_disk = _convert_data_disk(root_first.second, outdir, "vm2-disk-1.qcow2")
    error = _refused(repair_cluster, root_second, outdir, _attach(data_disk))
    assert error["code"] == "GUEST_NOT_FOUND"
    assert "no partition of the 2 attached disk(s)" in error["message"]


@pytest.fixture(scope="module")
def slow_data_disk(repair_cluster: Cluster) -> Path:
    """A /var disk with 4 million inodes and no uninit_bg: its e2fsck takes seconds."""
    directory = repair_cluster.input_dir / "vm-slow"
    directory.mkdir()
    target = directory / "vm1-slow.vmdk"
    slow = PartitionSpec("ext4", 2048, {}, ("-N", "4000000", "-O", "^metadata_csum,^uninit_bg"))
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        build_disk(target, "dos", [slow], Path(scratch))
    return target


def test_agent_killed_with_two_disks_attached_releases_both_on_restart(
    repair_cluster: Cluster, root_first: TwoDiskVm, slow_data_disk: Path, outdir: Path
) -> None:
    data_disk = _convert_data_disk(slow_data_disk, outdir, "vm1-disk-1.qcow2")
    doc = _vm_repair("fs_repair", root_first.first, outdir, [_attach(data_disk)])
    job_id = submit(repair_cluster, doc)
    with repair_cluster.client() as client:
        phases = (event.phase for event in client.watch(job_id))
        assert next((p for p in phases if p in ("fsck", "mount", "done")), None) == "fsck"
    repair_cluster.agents["node-1"].stop(sig=signal.SIGKILL)
    left = leftovers(repair_cluster.workdir)
    assert len(left["storage_daemons"]) == 2 and len(left["loops"]) == 2, left
    journal = repair_cluster.workdir / "node-1" / "attachments" / f"{job_id}.json"
    assert journal.exists()

    repair_cluster.start_agent("node-1")
    wait_for(
        lambda: is_clean(repair_cluster.workdir),
        timeout=30,
        what=f"leftovers released: {leftovers(repair_cluster.workdir)}",
    )
    assert not journal.exists()
