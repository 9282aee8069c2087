"""How the guest boots: its boot loaders (and where they are) and the firmware it needs.

The firmware follows from the disks (an EFI system partition means UEFI; a partition table
without one can only be booted by BIOS) and is backed by what the boot loaders show: GRUB's
``i386-pc`` modules, EFI binaries on the ESP. ``fresh_nvram_bootable`` says whether a UEFI
guest boots with empty firmware variables (the VMware boot entry does not travel with the disk):
only through the removable-media path ``\\EFI\\BOOT\\BOOTX64.EFI``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.disk.attach import AttachedDisk, AttachedPartition
from agent.repair.guestfs import GuestPathError, GuestRoot

ESP_TYPES = frozenset({"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "ef"})
BIOS_BOOT_TYPE = "21686148-6449-6e6f-744e-656564454649"
GRUB_DIRS = ("/boot/grub2", "/boot/grub")
# Where distributions mount the ESP; the EFI directory lies at its top.
ESP_MOUNTPOINTS = ("/boot/efi", "/efi", "/boot")
FALLBACK_BINARIES = frozenset({"bootx64.efi", "bootaa64.efi", "bootia32.efi"})
MAX_EFI_FILES = 256


@dataclass(frozen=True)
class Bootloader:
    kind: str  # grub2, systemd-boot, shim, efi-fallback, extlinux, grub-legacy, efi
    platform: str  # bios, efi, or "" when the files do not say
    path: str  # the guest path that shows it

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "platform": self.platform, "path": self.path}


@dataclass
class Firmware:
    type: str  # "bios", "uefi" or "unknown"
    partition_table: str | None
    esp: AttachedPartition | None
    evidence: list[str] = field(default_factory=list)
    efi_binaries: list[str] = field(default_factory=list)
    fresh_nvram_bootable: bool | None = None  # UEFI only

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "partition_table": self.partition_table,
            "esp": {"disk": self.esp.disk, "partition": self.esp.number} if self.esp else None,
            "efi_binaries": self.efi_binaries,
            "fresh_nvram_bootable": self.fresh_nvram_bootable,
            "evidence": self.evidence,
        }


def _entries(root: GuestRoot, directory: str) -> list[tuple[str, bool]]:
    """(name, is_dir) of a guest directory's entries, sorted; empty when absent."""
    if not root.is_dir(directory):
        return []
    try:
        host = root.resolve(directory)
        with os.scandir(host) as found:
            return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in found)
    except (OSError, GuestPathError):
        return []


def efi_binaries(root: GuestRoot) -> list[str]:
    """Guest paths of the ``.efi`` files under ``EFI/<vendor>/`` of a mounted ESP."""
    found: list[str] = []
    for mountpoint in ESP_MOUNTPOINTS:
        base = mountpoint.rstrip("/")
        efi = next((n for n, d in _entries(root, base) if d and n.lower() == "efi"), None)
        if efi is None:
            continue
        for vendor, is_dir in _entries(root, f"{base}/{efi}"):
            if not is_dir:
                continue
            for name, sub in _entries(root, f"{base}/{efi}/{vendor}"):
                if not sub and name.lower().endswith(".efi") and len(found) < MAX_EFI_FILES:
                    found.append(f"{base}/{efi}/{vendor}/{name}")
        if found:
            return found
    return found


def _efi_kind(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    vendor = path.rsplit("/", 2)[-2].lower()
    if vendor == "boot" and name in FALLBACK_BINARIES:
        return "efi-fallback"
    if name.startswith("grub"):
        return "grub2"
    if name.startswith("shim"):
        return "shim"
    if name.startswith("systemd-boot"):
        return "systemd-boot"
    return "efi"


def bootloaders(root: GuestRoot, binaries: Sequence[str]) -> list[Bootloader]:
    """Every boot loader the guest's files show, with the path that shows it."""
    found = []
    for directory in GRUB_DIRS:
        config = f"{directory}/grub.cfg"
        if root.exists(config):
            found.append(Bootloader("grub2", "", config))
        if root.is_dir(f"{directory}/i386-pc"):
            found.append(Bootloader("grub2", "bios", f"{directory}/i386-pc"))
        if root.is_dir(f"{directory}/x86_64-efi"):
            found.append(Bootloader("grub2", "efi", f"{directory}/x86_64-efi"))
    found += [Bootloader(_efi_kind(path), "efi", path) for path in binaries]
    for loader in ("/boot/loader/loader.conf", "/efi/loader/loader.conf"):
        if root.exists(loader):
            found.append(Bootloader("systemd-boot", "efi", loader))
    for extlinux in ("/boot/extlinux/extlinux.conf", "/boot/syslinux/syslinux.cfg"):
        if root.exists(extlinux):
            found.append(Bootloader("extlinux", "bios", extlinux))
    if root.exists("/boot/grub/menu.lst"):
        found.append(Bootloader("grub-legacy", "bios", "/boot/grub/menu.lst"))
    return found


def _boot_table(disks: Sequence[AttachedDisk], root_disk: int) -> AttachedDisk | None:
    """The disk the guest boots from: the one with an ESP, else the one holding the root."""
    with_esp = [d for d in disks if any(p.part_type in ESP_TYPES for p in d.partitions)]
    if with_esp:
        return with_esp[0]
    return next((d for d in disks if d.index == root_disk), disks[0] if disks else None)


def firmware(
    disks: Sequence[AttachedDisk], root_disk: int, loaders: Sequence[Bootloader]
) -> Firmware:
    """The firmware the guest needs; see the module docstring for the rule."""
    disk = _boot_table(disks, root_disk)
    table = disk.label if disk else None
    esp = next((p for p in disk.partitions if p.part_type in ESP_TYPES), None) if disk else None
    binaries = [b.path for b in loaders if b.platform == "efi" and b.path.lower().endswith(".efi")]
    result = Firmware("unknown", table, esp, efi_binaries=binaries)
    if esp is not None:
        result.type = "uefi"
        result.evidence.append(f"EFI system partition: disk {esp.disk} partition {esp.number}")
        if binaries:
            result.evidence.append(f"{len(binaries)} EFI binaries on it")
        else:
            result.evidence.append("no EFI boot loader found on it (is it in the fstab?)")
        result.fresh_nvram_bootable = any(_efi_kind(b) == "efi-fallback" for b in binaries)
    elif table is not None:
        result.type = "bios"
        kind = "GPT" if table == "gpt" else "MBR"
        result.evidence.append(f"{kind} partition table without an EFI system partition")
        if disk and any(p.part_type == BIOS_BOOT_TYPE for p in disk.partitions):
            result.evidence.append("BIOS boot partition present")
    else:
        result.evidence.append("no partition table: the disk holds one file system")
    if any(b.platform == "bios" for b in loaders):
        result.evidence.append("BIOS boot loader files present")
    return result
