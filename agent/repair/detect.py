"""What guest is on the disk: distribution, root device, boot loader, initramfs tool."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from agent.disk.attach import AttachedDisk, AttachedPartition
from agent.repair.devices import DiskNaming, disk_naming
from agent.repair.fstab import TabEntry, parse_fstab
from agent.repair.guestfs import GuestRoot

# File systems the agent mounts to look for a root, and checks with their own tools.
LINUX_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs"})
RHEL_IDS = frozenset({"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn"})
DEBIAN_IDS = frozenset({"debian", "ubuntu", "linuxmint", "raspbian"})
GRUB_CONFIGS = ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")
INITRAMFS_TOOLS = {
    "dracut": ("/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut"),
    "initramfs-tools": ("/usr/sbin/update-initramfs", "/sbin/update-initramfs"),
    "mkinitcpio": ("/usr/bin/mkinitcpio", "/sbin/mkinitcpio"),
}


def looks_like_root(root: GuestRoot) -> bool:
    """A root file system has /etc/fstab and says what it is (os-release or *-release)."""
    has_release = any(
        root.exists(p) for p in ("/etc/os-release", "/usr/lib/os-release", "/etc/redhat-release")
    )
    return root.exists("/etc/fstab") and has_release


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or key.strip().startswith("#"):
            continue
        try:
            parts = shlex.split(raw)
        except ValueError:
            continue
        values[key.strip()] = parts[0] if parts else ""
    return values


def family_of(release: dict[str, str]) -> str:
    ids = {release.get("ID", "")} | set(release.get("ID_LIKE", "").split())
    if ids & RHEL_IDS:
        return "rhel"
    if ids & DEBIAN_IDS:
        return "debian"
    if ids & {"suse", "opensuse", "sles"}:
        return "suse"
    if "arch" in ids:
        return "arch"
    return "unknown"


def bootloaders(root: GuestRoot) -> list[str]:
    found = []
    if any(root.exists(p) for p in GRUB_CONFIGS) or root.exists("/etc/default/grub"):
        found.append("grub2")
    if root.glob("/boot/loader/entries", "*.conf"):
        found.append("bls")
    if root.exists("/boot/extlinux/extlinux.conf") or root.exists("/extlinux.conf"):
        found.append("extlinux")
    if root.exists("/boot/grub/menu.lst"):
        found.append("grub-legacy")
    return found


def initramfs_tools(root: GuestRoot) -> list[str]:
    """Which initramfs systems the guest is configured for (config dir or tool present)."""
    found = []
    if root.is_dir("/etc/dracut.conf.d") or _first(root, INITRAMFS_TOOLS["dracut"]):
        found.append("dracut")
    if root.is_dir("/etc/initramfs-tools"):
        found.append("initramfs-tools")
    if root.exists("/etc/mkinitcpio.conf"):
        found.append("mkinitcpio")
    return found


def _first(root: GuestRoot, paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if root.exists(p)), None)


def initramfs_binary(root: GuestRoot, tool: str) -> str | None:
    """The guest path of the tool's program, when the guest has it."""
    return _first(root, INITRAMFS_TOOLS[tool])


def selinux_mode(root: GuestRoot) -> str | None:
    text = root.read_text("/etc/selinux/config")
    if text is None:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "SELINUX":
            return value.strip().strip('"').lower()
    return None


@dataclass
class GuestInfo:
    """The detected guest, as the report shows it."""

    distro: str
    name: str
    version: str
    family: str
    root_partition: AttachedPartition
    root_spec: str
    naming: DiskNaming
    fstab: list[TabEntry]
    bootloaders: list[str] = field(default_factory=list)
    initramfs_tools: list[str] = field(default_factory=list)
    selinux: str | None = None
    # guest mount point -> (disk index, partition number)
    mounted: dict[str, tuple[int, int]] = field(default_factory=dict)
    not_mounted: list[str] = field(default_factory=list)  # fstab entries left, and why

    @property
    def disk(self) -> str | None:
        """The guest's kernel name of the disk holding the root (``sda``), when known."""
        return self.naming.name(self.root_partition.disk)

    def _mountpoints(self) -> dict[tuple[int, int], str]:
        return {where: point for point, where in self.mounted.items()}

    def describe_disks(self, disks: list[AttachedDisk]) -> list[dict[str, Any]]:
        """Every attached disk, its partitions (with mount points) and whether it holds /."""
        where = self._mountpoints()
        return [
            {
                **disk.describe(),
                "guest_name": f"/dev/{name}" if (name := self.naming.name(disk.index)) else None,
                "holds_root": disk.index == self.root_partition.disk,
                "partitions": [
                    {**p.describe(), "mountpoint": where.get((p.disk, p.number))}
                    for p in disk.partitions
                ],
            }
            for disk in disks
        ]

    def describe(self, partitions: list[AttachedPartition]) -> dict[str, Any]:
        where = self._mountpoints()
        return {
            "distribution": self.distro,
            "name": self.name,
            "version": self.version,
            "family": self.family,
            "root_device": {
                "fstab_spec": self.root_spec,
                "disk": self.root_partition.disk,
                "partition": self.root_partition.number,
                "uuid": self.root_partition.uuid,
                "fstype": self.root_partition.fstype,
            },
            "guest_disk_name": f"/dev/{self.disk}" if self.disk else None,
            "disk_naming": self.naming.family or f"unknown: {self.naming.reason}",
            "filesystems": [
                {**p.describe(), "mountpoint": where.get((p.disk, p.number))} for p in partitions
            ],
            "not_mounted": self.not_mounted,
            "bootloaders": self.bootloaders,
            "initramfs": self.initramfs_tools,
            "selinux": self.selinux,
        }


def identify(root: GuestRoot, root_partition: AttachedPartition) -> GuestInfo:
    """Read what the mounted root says about the guest."""
    text = root.read_text("/etc/os-release") or root.read_text("/usr/lib/os-release") or ""
    release = parse_os_release(text)
    entries = parse_fstab(root.read_text("/etc/fstab") or "")
    root_entry = next((e for e in entries if e.mountpoint == "/"), None)
    return GuestInfo(
        distro=release.get("ID", "unknown"),
        name=release.get("PRETTY_NAME") or release.get("NAME", ""),
        version=release.get("VERSION_ID", ""),
        family=family_of(release),
        root_partition=root_partition,
        root_spec=root_entry.spec if root_entry else "",
        naming=disk_naming(entries, root_partition),
        fstab=entries,
        bootloaders=bootloaders(root),
        initramfs_tools=initramfs_tools(root),
        selinux=selinux_mode(root),
    )
