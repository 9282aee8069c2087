"""Pure repair logic on directory trees: guest path resolution, device names, edits."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from agent.disk.attach import AttachedPartition
from agent.errors import InvalidSpec
from agent.repair.actions import selected_actions
from agent.repair.changes import ChangeSet
from agent.repair.devices import (
    DeviceMap,
    DiskNaming,
    disk_letters,
    disk_naming,
    split_disk_name,
)
from agent.repair.fixes.network import _netplan_without_mac
from agent.repair.fstab import parse_fstab, replace_column
from agent.repair.guestfs import GuestPathError, GuestRoot
from protocol.spec import Operation

_SD = DiskNaming("sd")


def _partition(number: int, fstype: str, uuid: str) -> AttachedPartition:
    return AttachedPartition(number, 0, 1, f"/dev/loop{number}", fstype=fstype, uuid=uuid)


def test_absolute_symlinks_resolve_inside_the_guest(tmp_path: Path) -> None:
    guest = tmp_path / "guest"
    (guest / "etc").mkdir(parents=True)
    (guest / "etc" / "real-fstab").write_text("guest fstab\n")
    os.symlink("/etc/real-fstab", guest / "etc" / "fstab")
    os.symlink("/../../../../etc", guest / "escape")
    root = GuestRoot(guest)
    assert root.resolve("/etc/fstab") == guest / "etc" / "real-fstab"
    assert root.read_text("/etc/fstab") == "guest fstab\n"
    # ".." never climbs above the guest's root, so the host's /etc stays out of reach.
    assert root.resolve("/escape/passwd") == guest / "etc" / "passwd"
    assert root.read_text("/escape/passwd") is None


def test_symlink_loops_are_refused(tmp_path: Path) -> None:
    os.symlink("/b", tmp_path / "a")
    os.symlink("/a", tmp_path / "b")
    with pytest.raises(GuestPathError, match="too many levels"):
        GuestRoot(tmp_path).resolve("/a/x")


def test_dry_run_records_the_diff_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "fstab").write_text("/dev/sda1 / ext4 defaults 0 1\n")
    changes = ChangeSet(GuestRoot(tmp_path), dry_run=True)
    assert changes.write_text("fstab_uuid", "/etc/fstab", "UUID=x / ext4 defaults 0 1\n")
    assert (tmp_path / "etc" / "fstab").read_text() == "/dev/sda1 / ext4 defaults 0 1\n"
    assert "-/dev/sda1" in (changes.changes[0].diff or "")


def test_device_names_resolve_only_on_this_disk_and_matching_type() -> None:
    devices = DeviceMap([_partition(1, "ext4", "u1"), _partition(2, "xfs", "u2")], _SD)
    assert devices.resolve("/dev/sda2", "xfs").uuid_spec == "UUID=u2"
    assert devices.resolve("/dev/disk/by-id/scsi-36000c29-part1").uuid_spec == "UUID=u1"
    assert "not attached (attached: /dev/sda)" in devices.resolve("/dev/sdb1", "xfs").reason
    assert "holds ext4, not xfs" in devices.resolve("/dev/sda1", "xfs").reason
    assert "no partition 3" in devices.resolve("/dev/sda3").reason
    assert "not a /dev/sd* name" in devices.resolve("/dev/vda1").reason


def test_device_names_resolve_across_disks_in_the_guests_order() -> None:
    partitions = [
        _partition(1, "ext4", "root"),
        replace(_partition(1, "ext4", "var"), disk=1),
        replace(_partition(2, "xfs", "srv"), disk=2),
    ]
    devices = DeviceMap(partitions, _SD, disk_count=3)
    assert devices.resolve("/dev/sda1", "ext4").uuid_spec == "UUID=root"
    assert devices.resolve("/dev/sdb1", "ext4").uuid_spec == "UUID=var"
    assert devices.resolve("/dev/sdc2", "xfs").uuid_spec == "UUID=srv"
    assert "/dev/sdb has no partition 2" in devices.resolve("/dev/sdb2").reason
    assert "(attached: /dev/sda, /dev/sdb, /dev/sdc)" in devices.resolve("/dev/sdd1").reason
    assert "ambiguous" in devices.resolve("/dev/disk/by-id/scsi-3-part1").reason


def test_disk_naming_comes_from_where_the_root_really_is() -> None:
    root_on_second = replace(_partition(1, "ext4", "r"), disk=1)
    fstab = parse_fstab("/dev/vdb1 / ext4 defaults 0 1\n/dev/vda1 /srv ext4 defaults 0 2\n")
    assert disk_naming(fstab, root_on_second) == DiskNaming("vd")
    wrong = disk_naming(fstab, _partition(1, "ext4", "r"))
    assert wrong.family is None and "not the guest's" in wrong.reason
    by_uuid = parse_fstab("UUID=r / ext4 defaults 0 1\n/dev/hdb1 /var ext4 defaults 0 2\n")
    assert disk_naming(by_uuid, root_on_second).name(1) == "hdb"
    assert [disk_letters(i) for i in (0, 1, 25, 26, 27)] == ["a", "b", "z", "aa", "ab"]
    assert split_disk_name("sdab") == ("sd", 27) and split_disk_name("xvdc") == ("xvd", 2)


def test_replace_column_keeps_the_spacing() -> None:
    text = "# c\n/dev/sda1\t/boot   ext4 defaults 1 2\n"
    entry = parse_fstab(text)[0]
    assert replace_column(text, entry.line_index, 0, "UUID=x") == (
        "# c\nUUID=x\t/boot   ext4 defaults 1 2\n"
    )


def test_netplan_mac_match_becomes_a_name_match_for_one_nic() -> None:
    doc = yaml.safe_load(
        "network:\n  ethernets:\n    ens160:\n      match: {macaddress: '00:50:56:00:00:01'}\n"
        "      set-name: ens160\n      dhcp4: true\n"
    )
    notes: list[str] = []
    assert _netplan_without_mac(doc, notes, "/etc/netplan/x.yaml")
    assert doc["network"]["ethernets"]["ens160"] == {
        "match": {"name": "e*"},
        "set-name": "ens160",
        "dhcp4": True,
    }


def test_requested_actions_are_checked_by_index() -> None:
    assert selected_actions(Operation.OFFLINE_FIX, ["network_cleanup"]) == ("network_cleanup",)
    with pytest.raises(InvalidSpec, match=r"requested_actions\[1\]: 'defrag' is not"):
        selected_actions(Operation.OFFLINE_FIX, ["fstab_uuid", "defrag"])
    with pytest.raises(InvalidSpec, match=r"requested_actions\[0\]: 'network_cleanup' is not part"):
        selected_actions(Operation.BOOT_REPAIR, ["network_cleanup"])
