"""Offline repair through the real control plane and agent, on real guest disks.

Each output is opened independently (converted to raw, loop-attached read-only, mounted) and
checked against blkid: the references point at the real UUIDs, the MAC bindings are gone, the
driver configuration is there, and the report says exactly what changed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from devsupport.cluster import Cluster, wait_for
from devsupport.images import image_info
from protocol.conversion import spec_to_proto
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc
from protocol.spec import parse_spec
from tests.support.guests import (
    VMWARE_MAC,
    GuestDisk,
    OpenedDisk,
    build_debian_like,
    build_rhel_like,
    opened_readonly,
)
from tests.support.repair_checks import is_clean, leftovers, sha256
from tests.support.repair_jobs import action, events, job, repair_spec, report_of, run_job, submit

EXAMPLE_ACTIONS = [
    "fstab_uuid",
    "grub_root_uuid",
    "network_cleanup",
    "remove_vmware_tools",
    "virtio_initramfs",
]


@dataclass(frozen=True)
class Guests:
    rhel: GuestDisk
    debian: GuestDisk
    sha: dict[str, str]


@pytest.fixture(scope="module")
def guests(repair_cluster: Cluster) -> Guests:
    directory = repair_cluster.input_dir / "guests"
    directory.mkdir()
    rhel = build_rhel_like(directory)
    debian = build_debian_like(directory)
    return Guests(rhel, debian, {g.kind: sha256(g.path) for g in (rhel, debian)})


@pytest.fixture
def readback(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def _assert_node_clean(cluster: Cluster) -> None:
    assert is_clean(cluster.workdir), leftovers(cluster.workdir)
    journal = cluster.workdir / "node-1" / "attachments"
    assert not journal.exists() or not list(journal.iterdir())


def _assert_sources_unchanged(guests: Guests) -> None:
    for guest in (guests.rhel, guests.debian):
        assert sha256(guest.path) == guests.sha[guest.kind], f"{guest.path} was modified"


def _completed(result: dict) -> None:
    assert result["state"] == "COMPLETED", result["result"]


def _fstab_specs(disk: OpenedDisk, root: int) -> dict[str, str]:
    text = disk.read(root, "/etc/fstab") or ""
    rows = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    return {row[1]: row[0] for row in rows}


def test_offline_fix_rhel_with_example_actions(
    repair_cluster: Cluster, guests: Guests, outdir: Path, readback: Path
) -> None:
    doc = repair_spec("offline_fix", guests.rhel.path, outdir, actions=EXAMPLE_ACTIONS)
    result = run_job(repair_cluster, doc)
    _completed(result)
    image = outdir / "rhel-guest.qcow2"
    report = report_of(outdir, doc["job_id"])
    assert result["result"]["details"]["actions"] == report["actions"]
    with opened_readonly(image, "qcow2", readback) as disk:
        boot_uuid, root_uuid = disk.blkid[1]["UUID"], disk.blkid[2]["UUID"]
        fstab = _fstab_specs(disk, 2)
        assert fstab["/"] == f"UUID={root_uuid}"
        assert fstab["/boot"] == f"UUID={boot_uuid}"
        assert fstab["/data"] == "/dev/sdb1"  # another disk: left, and said so
        entry = disk.read(1, "/loader/entries/0c3f-5.14.0-284.el9.x86_64.conf") or ""
        assert f"options root=UUID={root_uuid} ro" in entry
        assert not disk.exists(1, "/grub2/device.map")
        ifcfg = disk.read(2, "/etc/sysconfig/network-scripts/ifcfg-ens192") or ""
        assert "HWADDR" not in ifcfg and "DEVICE=ens192" in ifcfg
        keyfile = disk.read(2, "/etc/NetworkManager/system-connections/ens192.nmconnection")
        assert keyfile is not None and "mac-address" not in keyfile and "[ipv4]" in keyfile
        wants = "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service"
        assert not disk.exists(2, wants)
        assert disk.readlink(2, "/etc/systemd/system/vmtoolsd.service") == "/dev/null"
        dracut = disk.read(2, "/etc/dracut.conf.d/h2k-virtio.conf") or ""
        assert all(m in dracut for m in ("virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci"))
        assert not disk.exists(2, "/.autorelabel")  # not requested
    statuses = {a["action"]: a["status"] for a in report["actions"]}
    assert statuses == {name: "applied" for name in EXAMPLE_ACTIONS}
    changed = {f["path"] for f in report["files"]}
    assert changed == {
        "/etc/fstab",
        "/boot/loader/entries/0c3f-5.14.0-284.el9.x86_64.conf",
        "/boot/grub2/device.map",
        "/etc/sysconfig/network-scripts/ifcfg-ens192",
        "/etc/NetworkManager/system-connections/ens192.nmconnection",
        "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service",
        "/etc/systemd/system/vmtoolsd.service",
        "/etc/dracut.conf.d/h2k-virtio.conf",
    }
    fstab_change = next(f for f in report["files"] if f["path"] == "/etc/fstab")
    assert f"+UUID={root_uuid}" in fstab_change["diff"] and "-/dev/sda2" in fstab_change["diff"]
    regenerate = action(report, "virtio_initramfs")["steps"][0]
    assert regenerate == {
        "step": "regenerate (dracut)",
        "status": "skipped",
        "reason": "dracut not present in guest",
    }
    guest = report["guest"]
    assert (guest["distribution"], guest["version"], guest["family"]) == ("rhel", "9.2", "rhel")
    assert guest["root_device"] == {
        "fstab_spec": "/dev/sda2",
        "disk": 0,
        "partition": 2,
        "uuid": root_uuid,
        "fstype": "xfs",
    }
    assert {"grub2", "bls"} <= set(guest["bootloaders"])
    mounted = {fs["number"]: fs["mountpoint"] for fs in guest["filesystems"]}
    assert mounted == {1: "/boot", 2: "/"}
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)


def test_offline_fix_debian_all_actions(
    repair_cluster: Cluster, guests: Guests, outdir: Path, readback: Path
) -> None:
    doc = repair_spec("offline_fix", guests.debian.path, outdir)
    result = run_job(repair_cluster, doc)
    _completed(result)
    report = report_of(outdir, doc["job_id"])
    with opened_readonly(outdir / "debian-guest.qcow2", "qcow2", readback) as disk:
        root_uuid, swap_uuid = disk.blkid[1]["UUID"], disk.blkid[2]["UUID"]
        fstab = _fstab_specs(disk, 1)
        assert fstab["/"] == f"UUID={root_uuid}"
        assert fstab["none"] == f"UUID={swap_uuid}"
        assert fstab["/media/cdrom0"] == "/dev/sr0"
        grub = disk.read(1, "/boot/grub/grub.cfg") or ""
        assert f"root=UUID={root_uuid} ro quiet" in grub and "/dev/sda" not in grub
        assert not disk.exists(1, "/boot/grub/device.map")
        netplan = disk.read(1, "/etc/netplan/01-netcfg.yaml") or ""
        assert "macaddress" not in netplan and VMWARE_MAC not in netplan
        assert "dhcp4: true" in netplan
        assert not disk.exists(1, "/etc/udev/rules.d/70-persistent-net.rules")
        modules = disk.read(1, "/etc/initramfs-tools/modules") or ""
        assert {"virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci"} <= set(modules.split())
        assert not disk.exists(1, "/etc/rc2.d/S01open-vm-tools")
        assert disk.readlink(1, "/etc/systemd/system/open-vm-tools.service") == "/dev/null"
    statuses = {a["action"]: a["status"] for a in report["actions"]}
    assert statuses == {
        "fs_check": "applied",  # checked: clean
        "fstab_uuid": "applied",
        "grub_root_uuid": "applied",
        "uefi_fallback": "skipped",  # a BIOS guest
        "network_cleanup": "applied",
        "remove_vmware_tools": "applied",
        "virtio_initramfs": "applied",
        "selinux_relabel": "skipped",
    }
    assert action(report, "selinux_relabel")["reason"] == "the guest has no SELinux configuration"
    assert action(report, "fs_check")["reason"] == "checked 1 file system(s): all clean"
    assert "initramfs-tools not present in guest" in action(report, "virtio_initramfs")["reason"]
    fsck = {r["partition"]: r for r in report["filesystem_checks"]}
    assert (fsck[1]["tool"], fsck[1]["result"]) == ("e2fsck", "clean")
    assert fsck[2]["result"] == "skipped"  # swap
    fstab_notes = action(report, "fstab_uuid")["notes"]
    assert any("left /dev/sr0" in note for note in fstab_notes)
    assert report["guest"]["distribution"] == "debian"
    assert report["guest"]["guest_disk_name"] == "/dev/sda"
    _assert_progress_is_honest(repair_cluster, doc["job_id"])
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)


def _assert_progress_is_honest(cluster: Cluster, job_id: str) -> None:
    progressing = [e for e in events(cluster, job_id) if e["state"] == "PROGRESSING"]
    phases = list(dict.fromkeys(e["phase"] for e in progressing))
    # The copy comes last, from the repaired and trimmed overlay: one pass.
    assert phases == [
        "inspect",
        "attach",
        "detect",
        "fsck",
        "mount",
        "fstab_uuid",
        "grub_root_uuid",
        "uefi_fallback",
        "network_cleanup",
        "remove_vmware_tools",
        "initramfs",
        "selinux_relabel",
        "trim",
        "detach",
        "convert",
        "finalize",
    ]
    percents = [e["progress_percent"] for e in progressing]
    assert percents == sorted(percents) and percents[-1] < 100


def test_dry_run_changes_nothing_and_reports_what_would(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    doc = repair_spec("offline_fix", guests.rhel.path, outdir, dry_run=True)
    result = run_job(repair_cluster, doc)
    _completed(result)
    assert sorted(p.name for p in outdir.iterdir()) == [f"{doc['job_id']}_report.json"]
    report = report_of(outdir, doc["job_id"])
    assert report["dry_run"] is True and report["image"]["repaired"] is None
    statuses = {a["action"]: a["status"] for a in report["actions"]}
    assert statuses["fstab_uuid"] == "would_apply"
    assert statuses["selinux_relabel"] == "would_apply"  # SELinux enforcing
    assert "/.autorelabel" in {f["path"] for f in report["files"]}
    assert all(r["result"] == "clean" for r in report["filesystem_checks"])
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)


@pytest.mark.parametrize(
    ("operation", "expected_actions"),
    [
        (
            "boot_repair",
            {"fstab_uuid": "applied", "grub_root_uuid": "applied", "uefi_fallback": "skipped"},
        ),
        ("fs_repair", {"fs_check": "applied"}),
        ("initramfs_regenerate", {"virtio_initramfs": "applied"}),
        ("selinux_prep", {"selinux_relabel": "applied"}),
    ],
)
def test_single_purpose_operations(
    repair_cluster: Cluster,
    guests: Guests,
    outdir: Path,
    readback: Path,
    operation: str,
    expected_actions: dict[str, str],
) -> None:
    doc = repair_spec(operation, guests.rhel.path, outdir)
    result = run_job(repair_cluster, doc)
    _completed(result)
    report = report_of(outdir, doc["job_id"])
    assert {a["action"]: a["status"] for a in report["actions"]} == expected_actions
    with opened_readonly(outdir / "rhel-guest.qcow2", "qcow2", readback) as disk:
        ifcfg = disk.read(2, "/etc/sysconfig/network-scripts/ifcfg-ens192") or ""
        assert "HWADDR" in ifcfg  # no operation here touches the network
        fstab = _fstab_specs(disk, 2)
        if operation == "boot_repair":
            assert fstab["/"] == f"UUID={disk.blkid[2]['UUID']}"
        else:
            assert fstab["/"] == "/dev/sda2"
        assert disk.exists(2, "/.autorelabel") == (operation == "selinux_prep")
        has_dracut_conf = disk.exists(2, "/etc/dracut.conf.d/h2k-virtio.conf")
        assert has_dracut_conf == (operation == "initramfs_regenerate")
    if operation == "fs_repair":
        checks = {r["partition"]: (r["tool"], r["result"]) for r in report["filesystem_checks"]}
        assert checks == {1: ("e2fsck", "clean"), 2: ("xfs_repair", "clean")}
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)


def test_in_place_repairs_a_qcow2_input(
    repair_cluster: Cluster, guests: Guests, outdir: Path, readback: Path
) -> None:
    image = repair_cluster.input_dir / "inplace" / "debian-inplace.qcow2"
    image.parent.mkdir(exist_ok=True)
    subprocess.run(
        ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(guests.debian.path), str(image)],
        check=True,
    )
    doc = repair_spec("boot_repair", image, outdir, in_place=True)
    _completed(run_job(repair_cluster, doc))
    assert sorted(p.name for p in outdir.iterdir()) == [f"{doc['job_id']}_report.json"]
    with opened_readonly(image, "qcow2", readback) as disk:
        assert _fstab_specs(disk, 1)["/"] == f"UUID={disk.blkid[1]['UUID']}"
    _assert_node_clean(repair_cluster)


def test_in_place_refuses_a_vmdk(repair_cluster: Cluster, guests: Guests, outdir: Path) -> None:
    doc = repair_spec("offline_fix", guests.debian.path, outdir, in_place=True)
    result = run_job(repair_cluster, doc)
    assert result["state"] == "FAILED"
    error = result["result"]["error"]
    assert error["code"] == "INVALID_SPEC"
    assert error["message"].startswith("parameters.in_place: only qcow2 or raw")
    _assert_sources_unchanged(guests)


def test_unknown_action_fails_validation_on_the_agent(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    doc = repair_spec("offline_fix", guests.debian.path, outdir, actions=["fstab_uuid", "defrag"])
    result = run_job(repair_cluster, doc)
    assert result["state"] == "FAILED"
    error = result["result"]["error"]
    assert error["code"] == "INVALID_SPEC" and error["phase"] == "validate"
    assert error["message"].startswith("requested_actions[1]: 'defrag' is not a repair action")
    assert list(outdir.iterdir()) == []


def test_lvm_repair_waits_for_a_node_with_device_mapper(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    if Path("/dev/mapper/control").exists() and shutil.which("lvm"):
        pytest.skip("this node has device-mapper and lvm: the job would be scheduled")
    doc = repair_spec("lvm_repair", guests.debian.path, outdir)
    job_id = submit(repair_cluster, doc)

    def waiting() -> dict | None:
        current = job(repair_cluster, job_id)
        return current if current["queue_reason"] else None

    queued = wait_for(waiting, timeout=20, what="a queue reason")
    assert queued["state"] == "QUEUED" and queued["assigned_agent"] == ""
    assert "no agent has" in queued["queue_reason"]
    assert "lvm" in queued["queue_reason"] or "device_mapper" in queued["queue_reason"]
    with repair_cluster.client() as client:
        client.cancel(job_id)


def test_agent_refuses_lvm_repair_without_device_mapper(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    """Sent straight to the agent (bypassing the scheduler), the job fails with the reason."""
    if Path("/dev/mapper/control").exists() and shutil.which("lvm"):
        pytest.skip("this node has device-mapper and lvm")
    doc = repair_spec("lvm_repair", guests.debian.path, outdir)
    request = services_pb2.ExecuteJobRequest(
        spec=spec_to_proto(parse_spec(doc)), attempt=1, start_seq=1
    )
    with grpc.insecure_channel(repair_cluster.agent_addresses["node-1"]) as channel:
        stream = services_pb2_grpc.WorkerStub(channel).ExecuteJob(request, timeout=60)
        last = list(stream)[-1]
    assert job_pb2.JobState.Name(last.state) == "JOB_STATE_FAILED"
    error = last.result.error
    assert (error.code, error.phase) == ("CAPABILITY_MISSING", "validate")
    assert "lvm_repair needs device-mapper and lvm on this node" in error.message
    assert "/dev/mapper/control" in error.message
    assert list(outdir.iterdir()) == []


def test_a_repair_honours_the_asked_compression_type(
    repair_cluster: Cluster, guests: Guests, outdir: Path, readback: Path
) -> None:
    doc = repair_spec(
        "boot_repair", guests.debian.path, outdir, compress=True, compression_type="zstd"
    )
    _completed(run_job(repair_cluster, doc))
    output = outdir / "debian-guest.qcow2"
    info = image_info(output)
    assert info["format-specific"]["data"]["compression-type"] == "zstd"
    with opened_readonly(output, "qcow2", readback) as disk:
        assert _fstab_specs(disk, 1)["/"] == f"UUID={disk.blkid[1]['UUID']}"
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)
