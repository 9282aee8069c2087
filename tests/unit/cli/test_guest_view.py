"""`h2kctl get` shows a guest inspection as a readable summary."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from agent.disk.attach import AttachedDisk, AttachedPartition
from agent.guest.describe import describe_guest
from cli.guest_view import guest_parts
from tests.support.guests import DEBIAN_KERNEL, VMWARE_MAC, debian_tree, write_tree


def _text(details: dict) -> str:
    console = Console(width=200, record=True)
    for part in guest_parts(details):
        console.print(part)
    return console.export_text()


def test_summary_names_what_a_user_checks(tmp_path: Path) -> None:
    write_tree(tmp_path, debian_tree(details=True, initramfs_compression="xz"))
    partition = AttachedPartition(1, 1 << 20, 192 << 20, "/dev/loop9", "83", "ext4", "u-1")
    disk = AttachedDisk("loop", Path("/unused"), "dos", [partition])
    guest = describe_guest(tmp_path, disks=[disk], root_partition=partition).describe()
    text = _text({"guest": guest})
    assert "Debian GNU/Linux 12 (bookworm) (id debian, version 12)" in text
    assert "bios, table dos" in text
    assert "/ <- /dev/sda1 (by device)" in text
    assert f"/etc/netplan/01-netcfg.yaml (netplan): ens160={VMWARE_MAC}" in text
    assert f"/boot/initrd.img-{DEBIAN_KERNEL} (cpio+xz): virtio drivers present" in text
    assert "open-vm-tools (enabled)" in text


def test_no_guest_says_why() -> None:
    text = _text({"guest": None, "guest_error": "no partition holds a Linux root"})
    assert "Guest not described: no partition holds a Linux root" in text
    assert _text({"format": "qcow2"}) == ""
