"""Pure repair logic on directory trees: guest path resolution, device names, edits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from agent.disk.attach import AttachedPartition
from agent.errors import InvalidSpec
from agent.repair.actions import selected_actions
from agent.repair.changes import ChangeSet
from agent.repair.devices import DeviceMap
from agent.repair.fixes.network import _netplan_without_mac
from agent.repair.fstab import parse_fstab, replace_column
from agent.repair.guestfs import GuestPathError, GuestRoot
from protocol.spec import Operation


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
    devices = DeviceMap([_partition(1, "ext4", "u1"), _partition(2, "xfs", "u2")], "sda")
    assert devices.resolve("/dev/sda2", "xfs").uuid_spec == "UUID=u2"
    assert devices.resolve("/dev/disk/by-id/scsi-36000c29-part1").uuid_spec == "UUID=u1"
    assert "not on this disk" in devices.resolve("/dev/sdb1", "xfs").reason
    assert "holds ext4, not xfs" in devices.resolve("/dev/sda1", "xfs").reason
    assert "no partition 3" in devices.resolve("/dev/sda3").reason


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
