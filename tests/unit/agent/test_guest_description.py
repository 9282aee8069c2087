"""Guest inspection over directory trees: the guests of tests/support/guests.py written to a
directory (no mounts), and initramfs images built by tests/support/initramfs.py."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Any

import pytest

from agent.disk.attach import AttachedDisk, AttachedPartition
from agent.guest.boot import BIOS_BOOT_TYPE
from agent.guest.cpio import Listing, list_initramfs
from agent.guest.describe import describe_guest, spec_naming
from agent.guest.esp import efi_paths
from agent.guest.initramfs import decoder_argv, read_with_python, virtio_drivers
from tests.support.guests import (
    DEBIAN_KERNEL,
    RHEL_KERNEL,
    VMWARE_MAC,
    debian_tree,
    rhel_trees,
    write_tree,
)
from tests.support.initramfs import (
    VIRTIO_MODULES,
    VMWARE_MODULES,
    early_microcode,
    initramfs_image,
    main_archive,
)

ESP_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX_GUID = "0fc63daf-8483-4772-8e79-3d69ed477de4"


def _partition(number: int, part_type: str, fstype: str, disk: int = 0) -> AttachedPartition:
    return AttachedPartition(
        number=number,
        offset=number * 1024 * 1024,
        size=64 * 1024 * 1024,
        device=f"/dev/loop{10 + number}",
        part_type=part_type,
        fstype=fstype,
        uuid=f"uuid-{number}",
        disk=disk,
    )


def _disk(label: str | None, *partitions: AttachedPartition) -> AttachedDisk:
    return AttachedDisk(
        method="loop", raw_path=Path("/unused"), label=label, partitions=list(partitions)
    )


def _rhel_guest(tmp_path: Path) -> Path:
    root_tree, boot_tree = rhel_trees(details=True)
    root = tmp_path / "rhel"
    write_tree(root, root_tree)
    write_tree(root / "boot", boot_tree)  # the /boot partition, mounted
    return root


def _debian_guest(tmp_path: Path, **extra: Any) -> Path:
    root = tmp_path / "debian"
    write_tree(root, {**debian_tree(details=True, initramfs_compression="xz"), **extra})
    return root


def _listing(image: bytes) -> Listing:
    listing, rest = list_initramfs(io.BytesIO(image))
    assert rest is None
    return listing


# --- initramfs images ----------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip", "xz"])
@pytest.mark.parametrize("microcode", [False, True])
def test_initramfs_members_are_listed_whatever_the_packing(
    compression: str, microcode: bool
) -> None:
    listing = _listing(initramfs_image("6.1.0", VIRTIO_MODULES, compression, microcode))
    assert listing.complete, listing.reason
    assert "init" in listing.names
    assert "usr/lib/modules/6.1.0/kernel/drivers/block/virtio_blk.ko.xz" in listing.names
    assert ("kernel/x86/microcode/GenuineIntel.bin" in listing.names) == microcode
    expected = (["cpio"] if microcode or compression == "none" else []) + (
        [compression] if compression != "none" else []
    )
    assert listing.layers == expected


def test_virtio_drivers_present_or_missing_as_the_image_was_built() -> None:
    with_virtio = _listing(initramfs_image("6.1.0", (*VMWARE_MODULES, *VIRTIO_MODULES)))
    vmware_only = _listing(initramfs_image("6.1.0", VMWARE_MODULES))
    assert virtio_drivers(with_virtio, set()).missing == []
    assert virtio_drivers(vmware_only, set()).missing == [
        "virtio_blk",
        "virtio_scsi",
        "virtio_pci",
        "virtio_net",
    ]
    built_in = virtio_drivers(vmware_only, {"virtio_blk", "virtio_pci"})
    assert built_in.drivers["virtio_blk"] == "built-in"
    assert built_in.missing == ["virtio_scsi", "virtio_net"]


def test_a_truncated_image_is_reported_incomplete_not_missing_drivers() -> None:
    image = gzip.compress(main_archive("6.1.0", VIRTIO_MODULES))[:-40]
    listing, _ = list_initramfs(io.BytesIO(image))
    assert not listing.complete and listing.reason


def test_garbage_is_not_an_initramfs() -> None:
    listing, _ = list_initramfs(io.BytesIO(b"MZ this is not a cpio archive"))
    assert not listing.complete
    assert "neither cpio nor a known compression" in listing.reason


def test_zstd_is_left_for_the_nodes_program(tmp_path: Path) -> None:
    zstd_frame = b"\x28\xb5\x2f\xfd" + b"\x00" * 64
    image = tmp_path / "initrd.img"
    image.write_bytes(early_microcode() + zstd_frame)
    with open(image, "rb") as file:
        listing, rest = list_initramfs(file)
    assert rest == ("zstd", len(early_microcode()))
    assert listing.names == [
        "kernel",
        "kernel/x86",
        "kernel/x86/microcode",
        "kernel/x86/microcode/GenuineIntel.bin",
    ]
    assert not read_with_python(image).complete
    argv = decoder_argv("zstd", Path("/s/in"), Path("/s/out"))
    assert argv[0] == "zstd" and argv[-2:] == ["--", "/s/in"] and "/s/out" in argv


# --- whole guests --------------------------------------------------------------------------


def test_rhel_like_guest(tmp_path: Path) -> None:
    root = _rhel_guest(tmp_path)
    disk = _disk("gpt", _partition(1, LINUX_GUID, "ext4"), _partition(2, LINUX_GUID, "xfs"))
    info = describe_guest(root, disks=[disk], root_partition=disk.partitions[1]).describe()
    assert (info["os"]["id"], info["os"]["version"], info["os"]["family"]) == (
        "rhel",
        "9.2",
        "rhel",
    )
    assert info["kernels"] == [
        {
            "version": RHEL_KERNEL,
            "path": f"/boot/vmlinuz-{RHEL_KERNEL}",
            "modules": f"/lib/modules/{RHEL_KERNEL}",  # /lib -> usr/lib
            "initramfs": f"/boot/initramfs-{RHEL_KERNEL}.img",
        }
    ]
    [image] = info["initramfs"]
    assert image["readable"] and image["packing"] == ["gzip"]
    assert image["virtio_missing"] == ["virtio_blk", "virtio_scsi", "virtio_pci", "virtio_net"]
    naming = {e["mountpoint"]: e["naming"] for e in info["fstab"]}
    assert naming == {"/": "device", "/boot": "device", "/data": "device", "/tmp": "none"}
    assert info["root"]["spec"] == "/dev/sda2" and info["root"]["fstype"] == "xfs"
    bound = {n["path"]: n["bindings"] for n in info["network"]}
    mac = VMWARE_MAC.lower()
    assert bound["/etc/sysconfig/network-scripts/ifcfg-ens192"] == [
        {"interface": "ens192", "mac": mac}
    ]
    assert bound["/etc/sysconfig/network-scripts/ifcfg-lo"] == []
    assert bound["/etc/NetworkManager/system-connections/ens192.nmconnection"] == [
        {"interface": "", "mac": mac}
    ]
    assert info["init_system"]["name"] == "systemd"
    assert info["init_system"]["evidence"] == "/sbin/init -> /usr/lib/systemd/systemd"
    [tools] = info["hypervisor_tools"]
    assert tools["name"] == "open-vm-tools" and tools["enabled"]
    assert {"kind": "grub2", "platform": "", "path": "/boot/grub2/grub.cfg"} in info["bootloaders"]
    assert info["firmware"]["type"] == "bios"
    assert info["firmware"]["partition_table"] == "gpt"
    assert info["firmware"]["esp"] is None


def test_debian_like_guest(tmp_path: Path) -> None:
    root = _debian_guest(tmp_path)
    disk = _disk("dos", _partition(1, "83", "ext4"), _partition(2, "82", "swap"))
    info = describe_guest(root, disks=[disk], root_partition=disk.partitions[0]).describe()
    assert (info["os"]["id"], info["os"]["version"]) == ("debian", "12")
    [image] = info["initramfs"]
    assert image["path"] == f"/boot/initrd.img-{DEBIAN_KERNEL}" and image["kernel"] == DEBIAN_KERNEL
    assert image["packing"] == ["cpio", "xz"]
    assert image["virtio"] == {
        d: "initramfs" for d in ("virtio_blk", "virtio_scsi", "virtio_pci", "virtio_net")
    }
    bound = {n["path"]: (n["kind"], n["bindings"]) for n in info["network"]}
    mac = VMWARE_MAC.lower()
    assert bound["/etc/netplan/01-netcfg.yaml"] == (
        "netplan",
        [{"interface": "ens160", "mac": mac}],
    )
    assert bound["/etc/udev/rules.d/70-persistent-net.rules"] == (
        "udev",
        [{"interface": "ens160", "mac": mac}],
    )
    names = {t["name"]: t for t in info["hypervisor_tools"]}
    assert set(names) == {"open-vm-tools"}  # qemu-guest-agent: only its config files are left
    assert "dpkg package open-vm-tools" in names["open-vm-tools"]["evidence"]
    assert "/etc/rc2.d/S01open-vm-tools" in names["open-vm-tools"]["evidence"]
    assert info["init_system"] == {
        "name": "systemd",
        "evidence": "/sbin/init -> /lib/systemd/systemd",
    }
    naming = {e["mountpoint"]: (e["naming"], e["stable"]) for e in info["fstab"]}
    assert naming["/"] == ("device", False) and naming["/media/cdrom0"] == ("device", False)
    assert info["firmware"]["type"] == "bios" and info["firmware"]["partition_table"] == "dos"


def test_virtio_built_into_the_kernel_counts(tmp_path: Path) -> None:
    builtin = "kernel/drivers/block/virtio_blk.ko\nkernel/drivers/virtio/virtio_pci.ko\n"
    root = _debian_guest(
        tmp_path,
        **{
            f"/lib/modules/{DEBIAN_KERNEL}/modules.builtin": builtin,
            f"/boot/initrd.img-{DEBIAN_KERNEL}": initramfs_image(DEBIAN_KERNEL, VMWARE_MODULES),
        },
    )
    [image] = describe_guest(root).describe()["initramfs"]
    assert image["virtio"]["virtio_blk"] == "built-in"
    assert image["virtio_missing"] == ["virtio_scsi", "virtio_net"]


@pytest.mark.parametrize("fallback", [False, True])
def test_uefi_guest_and_whether_it_boots_on_fresh_nvram(tmp_path: Path, fallback: bool) -> None:
    esp: dict[str, Any] = {
        "/boot/efi/EFI/debian/grubx64.efi": b"MZ",
        "/boot/efi/EFI/debian/shimx64.efi": b"MZ",
    }
    if fallback:
        esp["/boot/efi/EFI/BOOT/BOOTX64.EFI"] = b"MZ"
    root = _debian_guest(tmp_path, **esp)
    disk = _disk("gpt", _partition(1, ESP_GUID, "vfat"), _partition(2, LINUX_GUID, "ext4"))
    info = describe_guest(root, disks=[disk], root_partition=disk.partitions[1]).describe()
    firmware = info["firmware"]
    assert firmware["type"] == "uefi"
    assert firmware["esp"] == {"disk": 0, "partition": 1}
    assert "/boot/efi/EFI/debian/grubx64.efi" in firmware["efi_binaries"]
    assert firmware["fresh_nvram_bootable"] is fallback
    kinds = {b["kind"] for b in info["bootloaders"] if b["platform"] == "efi"}
    assert kinds == ({"grub2", "shim", "efi-fallback"} if fallback else {"grub2", "shim"})


def test_gpt_with_bios_boot_partition_is_bios(tmp_path: Path) -> None:
    root = _debian_guest(tmp_path, **{"/boot/grub/i386-pc/core.img": b"\x00"})
    disk = _disk("gpt", _partition(1, BIOS_BOOT_TYPE, ""), _partition(2, LINUX_GUID, "ext4"))
    firmware = describe_guest(root, disks=[disk]).describe()["firmware"]
    assert firmware["type"] == "bios"
    assert "BIOS boot partition present" in firmware["evidence"]
    assert "BIOS boot loader files present" in firmware["evidence"]


def test_fstab_naming() -> None:
    assert spec_naming("UUID=0a1b") == "uuid"
    assert spec_naming("LABEL=root") == "label"
    assert spec_naming("PARTUUID=1234-01") == "partuuid"
    assert spec_naming("/dev/disk/by-uuid/0a1b") == "uuid"
    assert spec_naming("/dev/mapper/rhel-root") == "device-mapper"
    assert spec_naming("/dev/sda1") == "device"
    assert spec_naming("tmpfs") == "none"


def test_a_fifo_planted_as_initramfs_is_not_opened(tmp_path: Path) -> None:
    root = _debian_guest(tmp_path)
    image = root / "boot" / f"initrd.img-{DEBIAN_KERNEL}"
    image.unlink()
    os.mkfifo(image)  # opening it would block the reader forever
    [described] = describe_guest(root).describe()["initramfs"]
    assert described["readable"] is False and described["error"] == "not a regular file"
    assert described["virtio"] is None


def test_symlinks_are_followed_inside_the_guest(tmp_path: Path) -> None:
    root = _debian_guest(tmp_path)
    os.unlink(root / "etc/os-release")
    os.symlink("/etc/hostname-of-the-agent", root / "etc/os-release")
    assert describe_guest(root).describe()["os"]["id"] == "unknown"


def test_an_unmounted_esp_listing_gives_guest_paths() -> None:
    listing = "::/EFI/\n::/EFI/debian/\n::/EFI/debian/grubx64.efi\n::/EFI/debian/grub.cfg\n"
    listing += "::/EFI/BOOT/BOOTX64.EFI\n::/EFI/debian/fw/fwupx64.efi\n"
    assert efi_paths(listing, "/boot/efi/") == [
        "/boot/efi/EFI/BOOT/BOOTX64.EFI",
        "/boot/efi/EFI/debian/grubx64.efi",
    ]


def test_efi_files_read_elsewhere_count_for_the_firmware(tmp_path: Path) -> None:
    root = _debian_guest(tmp_path)
    disk = _disk("gpt", _partition(1, ESP_GUID, "vfat"), _partition(2, LINUX_GUID, "ext4"))
    info = describe_guest(
        root, disks=[disk], efi_files=["/boot/efi/EFI/BOOT/BOOTX64.EFI"]
    ).describe()
    assert info["firmware"]["fresh_nvram_bootable"] is True


def test_an_oversized_config_file_is_not_read(tmp_path: Path) -> None:
    root = _debian_guest(tmp_path)
    with open(root / "etc/netplan/99-huge.yaml", "wb") as huge:
        huge.truncate(8 << 30)  # sparse: 8 GiB that must not be read into memory
    paths = [n["path"] for n in describe_guest(root).describe()["network"]]
    assert "/etc/netplan/01-netcfg.yaml" in paths and "/etc/netplan/99-huge.yaml" not in paths
