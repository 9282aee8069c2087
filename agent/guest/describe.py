"""Describe a guest from its mounted file systems: OS, kernels and their initramfs images,
boot loader and firmware, init system, root and fstab, network bindings, hypervisor tools.

:func:`describe_guest` only reads the tree it is given (no process, nothing written), so the
inspect operation and the repair can both call it on a guest they mounted read-only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.disk.attach import AttachedDisk, AttachedPartition
from agent.guest.boot import Bootloader, Firmware, bootloaders, efi_binaries, firmware
from agent.guest.cpio import Listing
from agent.guest.files import small_text
from agent.guest.initramfs import builtin_modules, read_with_python, virtio_drivers
from agent.guest.network import NetworkConfig, network_configs
from agent.guest.software import InstalledTool, hypervisor_tools, init_system
from agent.repair.detect import family_of, parse_os_release
from agent.repair.devices import DeviceMap, is_stable
from agent.repair.fstab import parse_fstab
from agent.repair.guestfs import GuestPathError, GuestRoot

KERNEL_PREFIXES = ("vmlinuz-", "vmlinux-", "kernel-")
INITRAMFS_PATTERNS = (("initramfs-", ".img"), ("initrd.img-", ""), ("initrd-", ""))
MODULE_DIRS = ("/lib/modules", "/usr/lib/modules")
MAX_BUILTIN_BYTES = 16 * 1024 * 1024
# fstab device columns by how they name the file system, longest prefix first.
SPEC_NAMING = (
    ("/dev/disk/by-uuid/", "uuid"),
    ("/dev/disk/by-label/", "label"),
    ("/dev/disk/by-partuuid/", "partuuid"),
    ("/dev/disk/by-partlabel/", "partlabel"),
    ("/dev/disk/by-id/", "by-id"),
    ("/dev/disk/by-path/", "by-path"),
    ("/dev/mapper/", "device-mapper"),
    ("UUID=", "uuid"),
    ("LABEL=", "label"),
    ("PARTUUID=", "partuuid"),
    ("PARTLABEL=", "partlabel"),
    ("/dev/", "device"),
)


@dataclass
class InitramfsImage:
    path: str
    kernel: str | None  # the kernel version it belongs to
    listing: Listing
    builtin: set[str] = field(default_factory=set)

    def describe(self) -> dict[str, Any]:
        drivers = virtio_drivers(self.listing if self.listing.complete else None, self.builtin)
        readable = self.listing.complete
        return {
            "path": self.path,
            "kernel": self.kernel,
            "packing": self.listing.layers,
            "members": len(self.listing.names),
            "readable": readable,
            "error": self.listing.reason or None,
            # Unknown, not "missing", when the image could not be read to the end.
            "virtio": drivers.drivers if readable else None,
            "virtio_missing": drivers.missing if readable else None,
        }


@dataclass
class GuestDescription:
    """The guest as inspection reports it (see :meth:`describe`)."""

    os: dict[str, str]
    kernels: list[dict[str, Any]]
    initramfs: list[InitramfsImage]
    bootloaders: list[Bootloader]
    firmware: Firmware
    init_system: dict[str, str]
    root: dict[str, Any] | None
    fstab: list[dict[str, Any]]
    network: list[NetworkConfig]
    hypervisor_tools: list[InstalledTool]

    def describe(self) -> dict[str, Any]:
        return {
            "os": self.os,
            "kernels": self.kernels,
            "initramfs": [image.describe() for image in self.initramfs],
            "bootloaders": [b.describe() for b in self.bootloaders],
            "firmware": self.firmware.describe(),
            "init_system": self.init_system,
            "root": self.root,
            "fstab": self.fstab,
            "network": [n.describe() for n in self.network],
            "hypervisor_tools": [t.describe() for t in self.hypervisor_tools],
        }


def os_release(root: GuestRoot) -> dict[str, str]:
    text = small_text(root, "/etc/os-release") or small_text(root, "/usr/lib/os-release")
    release = parse_os_release(text or "")
    return {
        "id": release.get("ID", "unknown"),
        "version": release.get("VERSION_ID", ""),
        "name": release.get("PRETTY_NAME") or release.get("NAME", ""),
        "id_like": release.get("ID_LIKE", ""),
        "family": family_of(release),
        "source": "" if text is None else "os-release",
    }


def initramfs_images(root: GuestRoot) -> list[tuple[str, str]]:
    """(guest path, version suffix) of every initramfs image in /boot."""
    found = []
    for prefix, suffix in INITRAMFS_PATTERNS:
        for path in root.glob("/boot", f"{prefix}*{suffix}"):
            name = path.rsplit("/", 1)[-1]
            version = name.removeprefix(prefix)
            version = version.removesuffix(suffix) if suffix else version
            if version:
                found.append((path, version))
    return found


def image_file(root: GuestRoot, path: str) -> Path | None:
    """The host path of a guest file that is safe to open: a regular file (not a FIFO a
    hostile guest planted to block the reader), symlinks followed inside the guest."""
    try:
        host = root.resolve(path)
        return host if stat.S_ISREG(os.lstat(host).st_mode) else None
    except (OSError, GuestPathError):
        return None


def _read_image(root: GuestRoot, path: str) -> Listing:
    host = image_file(root, path)
    if host is None:
        return Listing(complete=False, reason="not a regular file")
    try:
        return read_with_python(host)
    except OSError as exc:
        return Listing(complete=False, reason=str(exc))


def _kernel_versions(root: GuestRoot) -> dict[str, str]:
    """version -> kernel image path."""
    found: dict[str, str] = {}
    for prefix in KERNEL_PREFIXES:
        for path in root.glob("/boot", f"{prefix}*"):
            found.setdefault(path.rsplit("/", 1)[-1].removeprefix(prefix), path)
    return found


def _builtin(root: GuestRoot, version: str) -> tuple[set[str], str | None]:
    for directory in MODULE_DIRS:
        text = small_text(root, f"{directory}/{version}/modules.builtin", MAX_BUILTIN_BYTES)
        if text is not None:
            return builtin_modules(text), f"{directory}/{version}"
    for directory in MODULE_DIRS:
        if root.is_dir(f"{directory}/{version}"):
            return set(), f"{directory}/{version}"
    return set(), None


def kernels_and_images(
    root: GuestRoot, listings: Mapping[str, Listing] | None
) -> tuple[list[dict[str, Any]], list[InitramfsImage]]:
    kernels = _kernel_versions(root)
    images = []
    for path, version in initramfs_images(root):
        listing = listings.get(path) if listings is not None else None
        if listing is None:
            listing = _read_image(root, path)
        kernel = version if version in kernels else None
        builtin = _builtin(root, kernel)[0] if kernel else set()
        images.append(InitramfsImage(path, kernel, listing, builtin))
    described = []
    for version, path in sorted(kernels.items()):
        modules = _builtin(root, version)[1]
        initramfs = next((i.path for i in images if i.kernel == version), None)
        described.append(
            {"version": version, "path": path, "modules": modules, "initramfs": initramfs}
        )
    return described, images


def spec_naming(spec: str) -> str:
    """How an fstab device column names its file system: uuid, label, device, ..."""
    for prefix, naming in SPEC_NAMING:
        if spec.startswith(prefix):
            return naming
    return "none"  # tmpfs, proc, a network file system...


def _where(partition: AttachedPartition | None) -> dict[str, Any] | None:
    if partition is None:
        return None
    return {
        "disk": partition.disk,
        "partition": partition.number,
        "fstype": partition.fstype,
        "uuid": partition.uuid,
        "label": partition.label,
    }


def fstab_entries(root: GuestRoot, devices: DeviceMap | None) -> list[dict[str, Any]]:
    entries = parse_fstab(small_text(root, "/etc/fstab") or "")
    described = []
    for entry in entries:
        naming = spec_naming(entry.spec)
        found = devices.lookup(entry.spec) if devices and naming != "none" else None
        described.append(
            {
                "spec": entry.spec,
                "mountpoint": entry.mountpoint,
                "fstype": entry.fstype,
                "options": list(entry.options),
                "naming": naming,
                "stable": naming != "device" or is_stable(entry.spec),
                "found_on": _where(found),
            }
        )
    return described


def describe_guest(
    root: Path,
    *,
    disks: Sequence[AttachedDisk] = (),
    root_partition: AttachedPartition | None = None,
    devices: DeviceMap | None = None,
    initramfs: Mapping[str, Listing] | None = None,
    efi_files: Sequence[str] = (),
) -> GuestDescription:
    """Describe the guest mounted at ``root`` (its ``/``, with /boot and the ESP mounted
    below it as the guest mounts them).

    Args:
        disks: the attached disks (partition table, ESP) for the firmware; none: unknown.
        root_partition: the partition mounted as ``/``.
        devices: resolves fstab device columns to attached partitions.
        initramfs: listings of the initramfs images by guest path, read beforehand (with the
            node's decoders); an image not in it is read here with Python's decoders.
        efi_files: guest paths of EFI binaries on an ESP that is not mounted (read by the
            caller from the device).
    """
    guest = GuestRoot(root)
    kernels, images = kernels_and_images(guest, initramfs)
    binaries = [*efi_binaries(guest), *(f for f in efi_files if f)]
    loaders = bootloaders(guest, sorted(set(binaries)))
    fstab = fstab_entries(guest, devices)
    root_entry = next((e for e in fstab if e["mountpoint"] == "/"), None)
    root_info = None
    if root_entry is not None or root_partition is not None:
        root_info = {
            "spec": root_entry["spec"] if root_entry else None,
            "naming": root_entry["naming"] if root_entry else None,
            "fstype": (root_partition.fstype if root_partition else None)
            or (root_entry["fstype"] if root_entry else None),
            "mounted_from": _where(root_partition),
        }
    root_disk = root_partition.disk if root_partition else 0
    return GuestDescription(
        os=os_release(guest),
        kernels=kernels,
        initramfs=images,
        bootloaders=loaders,
        firmware=firmware(disks, root_disk, loaders),
        init_system=init_system(guest),
        root=root_info,
        fstab=fstab,
        network=network_configs(guest),
        hypervisor_tools=hypervisor_tools(guest),
    )
