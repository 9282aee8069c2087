"""inspect with parameters.guest_info through the real control plane and agent, on real guest
disks: what it reports about the guest, that the source is never written, and that nothing
stays attached (after success, after a failure to find a guest, after a cancel)."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devsupport.cluster import Cluster, wait_for
from devsupport.specs import job_spec
from tests.support.guests import (
    DEBIAN_KERNEL,
    RHEL_KERNEL,
    VMWARE_MAC,
    GuestDisk,
    build_debian_like,
    build_debian_uefi,
    build_rhel_like,
)
from tests.support.initramfs import slow_initramfs
from tests.support.repair_checks import is_clean, leftovers, sha256
from tests.support.repair_jobs import events, job, repair_spec, report_of, run_job, submit

VIRTIO = ("virtio_blk", "virtio_scsi", "virtio_pci", "virtio_net")


@dataclass(frozen=True)
class Guests:
    rhel: GuestDisk
    debian: GuestDisk
    sha: dict[str, str]


@pytest.fixture(scope="module")
def guests(repair_cluster: Cluster) -> Guests:
    directory = repair_cluster.input_dir / "inspect-guests"
    directory.mkdir()
    rhel = build_rhel_like(directory, details=True)
    debian = build_debian_like(directory, details=True)
    return Guests(rhel, debian, {g.kind: sha256(g.path) for g in (rhel, debian)})


def _inspect_spec(image: Path, outdir: Path, fmt: str = "vmdk", **params: Any) -> dict[str, Any]:
    return job_spec(
        "inspect",
        image=image,
        image_format=fmt,
        output=outdir,
        parameters={"guest_info": True, **params},
        capability_requirements={"needs_mount": True},
        execution_policy={"retry_count": 0, "timeout_seconds": 600},
    )


def _assert_node_clean(cluster: Cluster) -> None:
    assert is_clean(cluster.workdir), leftovers(cluster.workdir)
    journal = cluster.workdir / "node-1" / "attachments"
    assert not journal.exists() or not list(journal.iterdir())


def _guest_of(cluster: Cluster, guests: Guests, kind: str, outdir: Path) -> dict[str, Any]:
    disk = guests.rhel if kind == "rhel" else guests.debian
    result = run_job(cluster, _inspect_spec(disk.path, outdir))
    assert result["state"] == "COMPLETED", result["result"]
    assert sha256(disk.path) == guests.sha[kind], "the source was modified"
    _assert_node_clean(cluster)
    details = result["result"]["details"]
    assert details["format"] == "vmdk"  # the image part of the inspection is still there
    return dict(details["guest"])


def test_rhel_like_guest_is_described(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    guest = _guest_of(repair_cluster, guests, "rhel", outdir)
    assert (guest["os"]["id"], guest["os"]["version"]) == ("rhel", "9.2")
    fstab = {e["mountpoint"]: (e["spec"], e["naming"]) for e in guest["fstab"]}
    assert fstab["/"] == ("/dev/sda2", "device")
    assert fstab["/boot"] == ("/dev/sda1", "device")
    assert fstab["/tmp"] == ("tmpfs", "none")
    found = {e["mountpoint"]: e["found_on"] for e in guest["fstab"]}
    assert found["/boot"]["partition"] == 1 and found["/boot"]["fstype"] == "ext4"
    assert found["/data"] is None  # /dev/sdb1: a disk this job did not attach
    assert guest["root"]["fstype"] == "xfs" and guest["root"]["mounted_from"]["partition"] == 2
    mac = VMWARE_MAC.lower()
    bound = {n["path"]: n["bindings"] for n in guest["network"]}
    assert bound["/etc/sysconfig/network-scripts/ifcfg-ens192"] == [
        {"interface": "ens192", "mac": mac}
    ]
    assert bound["/etc/NetworkManager/system-connections/ens192.nmconnection"][0]["mac"] == mac
    # /boot is a partition of its own: the kernel and initramfs are found on it.
    assert [k["version"] for k in guest["kernels"]] == [RHEL_KERNEL]
    [image] = guest["initramfs"]
    assert image["packing"] == ["gzip"] and image["readable"]
    assert image["virtio_missing"] == list(VIRTIO)  # built on VMware: no virtio drivers
    assert guest["init_system"]["name"] == "systemd"
    assert [(t["name"], t["enabled"]) for t in guest["hypervisor_tools"]] == [
        ("open-vm-tools", True)
    ]
    assert guest["firmware"]["type"] == "bios" and guest["firmware"]["partition_table"] == "gpt"
    assert {"kind": "grub2", "platform": "", "path": "/boot/grub2/grub.cfg"} in guest["bootloaders"]


def test_debian_like_guest_zstd_initramfs_with_virtio(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    guest = _guest_of(repair_cluster, guests, "debian", outdir)
    assert (guest["os"]["id"], guest["os"]["version"]) == ("debian", "12")
    [image] = guest["initramfs"]
    assert image["path"] == f"/boot/initrd.img-{DEBIAN_KERNEL}"
    # Early microcode in front, the main archive in zstd: read with the node's zstd.
    assert image["packing"] == ["cpio", "zstd"], image
    assert image["virtio"] == dict.fromkeys(VIRTIO, "initramfs")
    mac = VMWARE_MAC.lower()
    bound = {n["path"]: (n["kind"], n["bindings"]) for n in guest["network"]}
    assert bound["/etc/netplan/01-netcfg.yaml"] == (
        "netplan",
        [{"interface": "ens160", "mac": mac}],
    )
    assert bound["/etc/udev/rules.d/70-persistent-net.rules"][1] == [
        {"interface": "ens160", "mac": mac}
    ]
    fstab = {e["mountpoint"]: e["naming"] for e in guest["fstab"]}
    assert fstab == {"/": "device", "none": "device", "/media/cdrom0": "device"}  # none: swap
    assert guest["firmware"]["type"] == "bios" and guest["firmware"]["partition_table"] == "dos"
    assert [t["name"] for t in guest["hypervisor_tools"]] == ["open-vm-tools"]


def test_h2kctl_get_shows_the_guest(repair_cluster: Cluster, guests: Guests, outdir: Path) -> None:
    doc = _inspect_spec(guests.debian.path, outdir)
    result = run_job(repair_cluster, doc)
    assert result["state"] == "COMPLETED", result["result"]
    shown = repair_cluster.h2kctl("get", doc["job_id"], check=True).stdout
    assert "Debian GNU/Linux 12 (bookworm) (id debian, version 12)" in shown
    assert "/ <- /dev/sda1 (by device)" in shown
    assert f"ens160={VMWARE_MAC.lower()}" in shown
    assert "virtio drivers present" in shown


def test_a_disk_without_a_linux_guest_says_so(repair_cluster: Cluster, outdir: Path) -> None:
    image = repair_cluster.input_dir / "blank-gpt.raw"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["sfdisk", "-q", str(image)], input="label: gpt\n,,L\n", text=True, check=True)
    result = run_job(repair_cluster, _inspect_spec(image, outdir, fmt="raw"))
    assert result["state"] == "COMPLETED", result["result"]
    details = result["result"]["details"]
    assert details["guest"] is None
    assert "no partition of the 1 attached disk(s) holds a Linux root" in details["guest_error"]
    _assert_node_clean(repair_cluster)


def test_guest_info_must_be_a_boolean(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    doc = _inspect_spec(guests.rhel.path, outdir, guest_info="yes")
    result = run_job(repair_cluster, doc)
    assert result["state"] == "FAILED"
    assert result["result"]["error"]["message"] == "parameters.guest_info: must be true or false"
    assert list(outdir.iterdir()) == []
    _assert_node_clean(repair_cluster)


@pytest.fixture(scope="module")
def slow_guest(repair_cluster: Cluster) -> GuestDisk:
    """A Debian-like guest whose initramfs takes seconds to read (4000 MiB of zeros)."""
    directory = repair_cluster.input_dir / "slow-initramfs"
    directory.mkdir()
    slow = {f"/boot/initrd.img-{DEBIAN_KERNEL}": slow_initramfs(DEBIAN_KERNEL, 4000)}
    return build_debian_like(directory, details=True, extra=slow)


def _wait_for_guest_phase(cluster: Cluster, job_id: str) -> None:
    def reading_guest() -> bool:
        phases = [e["phase"] for e in events(cluster, job_id)]
        assert job(cluster, job_id)["state"] not in ("COMPLETED", "FAILED")
        return "guest" in phases

    wait_for(reading_guest, timeout=120, interval=0.2, what="the guest phase")


def test_cancel_while_reading_the_guest_releases_everything(
    repair_cluster: Cluster, slow_guest: GuestDisk, outdir: Path
) -> None:
    disk = slow_guest
    before = sha256(disk.path)
    job_id = submit(repair_cluster, _inspect_spec(disk.path, outdir))
    _wait_for_guest_phase(repair_cluster, job_id)
    assert leftovers(repair_cluster.workdir)["mounts"], "the guest should be mounted now"
    with repair_cluster.client() as client:
        client.cancel(job_id)

    def cancelled() -> dict | None:
        current = job(repair_cluster, job_id)
        assert current["state"] not in ("COMPLETED", "FAILED"), current["result"]
        return current if current["state"] == "CANCELLED" else None

    try:
        result = wait_for(cancelled, timeout=60, what="CANCELLED")
    except TimeoutError:
        for e in events(repair_cluster, job_id):
            print("EVENT", e["time"], e["phase"], e["message"])
        raise
    assert result["result"]["error"]["phase"] == "guest"
    _assert_node_clean(repair_cluster)
    assert list(outdir.iterdir()) == []
    assert sha256(disk.path) == before


def test_repair_with_guest_info_describes_the_guest_as_found(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    doc = repair_spec(
        "offline_fix", guests.rhel.path, outdir, actions=["fstab_uuid"], guest_info=True
    )
    result = run_job(repair_cluster, doc)
    assert result["state"] == "COMPLETED", result["result"]
    report = report_of(outdir, doc["job_id"])
    guest = report["guest_info"]
    assert guest["os"]["id"] == "rhel"
    # As found, before the repair rewrote the fstab.
    assert {e["mountpoint"]: e["naming"] for e in guest["fstab"]}["/"] == "device"
    assert guest["initramfs"][0]["virtio_missing"] == list(VIRTIO)
    assert result["result"]["details"]["guest_info"]["os"]["id"] == "rhel"
    assert sha256(guests.rhel.path) == guests.sha["rhel"]
    _assert_node_clean(repair_cluster)


def test_uefi_guest_needs_uefi_and_its_nvram_entry(repair_cluster: Cluster, outdir: Path) -> None:
    directory = repair_cluster.input_dir / "uefi"
    directory.mkdir()
    disk = build_debian_uefi(directory)
    before = sha256(disk.path)
    result = run_job(repair_cluster, _inspect_spec(disk.path, outdir))
    assert result["state"] == "COMPLETED", result["result"]
    guest = result["result"]["details"]["guest"]
    firmware = guest["firmware"]
    assert firmware["type"] == "uefi" and firmware["partition_table"] == "gpt"
    assert firmware["esp"] == {"disk": 0, "partition": 1}
    # The ESP was mounted at /boot/efi as the guest's fstab says: its binaries are seen.
    assert sorted(firmware["efi_binaries"]) == [
        "/boot/efi/EFI/debian/grubx64.efi",
        "/boot/efi/EFI/debian/shimx64.efi",
    ]
    assert firmware["fresh_nvram_bootable"] is False  # no \EFI\BOOT\BOOTX64.EFI
    assert {"kind": "grub2", "platform": "efi", "path": "/boot/grub/x86_64-efi"} in guest[
        "bootloaders"
    ]
    assert {e["mountpoint"]: e["naming"] for e in guest["fstab"]}["/boot/efi"] == "device"
    assert sha256(disk.path) == before
    _assert_node_clean(repair_cluster)


def test_agent_killed_mid_inspection_releases_leftovers_on_restart(
    repair_cluster: Cluster, slow_guest: GuestDisk, outdir: Path
) -> None:
    before = sha256(slow_guest.path)
    job_id = submit(repair_cluster, _inspect_spec(slow_guest.path, outdir))
    _wait_for_guest_phase(repair_cluster, job_id)
    repair_cluster.agents["node-1"].stop(sig=signal.SIGKILL)
    left = leftovers(repair_cluster.workdir)
    assert left["mounts"] and left["loops"] and left["storage_daemons"], left
    journal = repair_cluster.workdir / "node-1" / "attachments" / f"{job_id}.json"
    assert journal.exists()

    repair_cluster.start_agent("node-1")
    wait_for(
        lambda: is_clean(repair_cluster.workdir),
        timeout=30,
        what=f"leftovers released: {leftovers(repair_cluster.workdir)}",
    )
    assert not journal.exists()
    assert sha256(slow_guest.path) == before
