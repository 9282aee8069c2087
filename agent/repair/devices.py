"""The guest's device names (``/dev/sdb1``, ``/dev/disk/by-id/...-part2``) → attached UUIDs.

A VMware guest names its partitions by the controller's view (``/dev/sdaN``); on KVM with
virtio they become ``/dev/vdaN``, so every such reference must become ``UUID=``.

The naming rule: the attached disks are the guest's disks in the order its source saw them,
the job's own disk first. Disk ``i`` is ``<family><letters(i)>`` (``sda``, ``sdb``, …,
``sdz``, ``sdaa``) in the one family (``sd``, ``vd``, ``hd``, ``xvd``) the guest uses. The
family is taken from the root's fstab entry, and only when that entry names the partition the
root was actually found on (disk and number); when the root is named by UUID, from the kernel
names in fstab if they all share one family. A name is resolved only when its disk is
attached, has that partition, and the file system type in the guest's file matches what
blkid finds. ``/dev/disk/by-id`` and ``by-path`` names say nothing h2k can map to an order,
so they are resolved only when a single disk is attached. Everything else is left alone,
with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from agent.disk.attach import AttachedPartition
from agent.repair.fstab import TabEntry

_KERNEL_NAME = re.compile(r"^/dev/(?P<disk>(?:sd|hd|vd|xvd)[a-z]+)(?P<number>\d+)$")
_DISK_NAME = re.compile(r"^(?P<family>xvd|sd|hd|vd)(?P<letters>[a-z]+)$")
_BY_ID = re.compile(r"^/dev/disk/by-(?:id|path)/.+-part(?P<number>\d+)$")
STABLE_PREFIXES = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=", "/dev/disk/by-uuid/")
# fstab types that are the same as (or aliases of) what blkid reports.
_ALIASES = {"vfat": {"vfat", "msdos", "fat"}, "swap": {"swap"}}


@dataclass(frozen=True)
class Resolution:
    """A device name resolved to a partition, or why it was not."""

    partition: AttachedPartition | None
    reason: str = ""

    @property
    def uuid_spec(self) -> str | None:
        if self.partition is None or not self.partition.uuid:
            return None
        return f"UUID={self.partition.uuid}"


@dataclass(frozen=True)
class DiskNaming:
    """How the guest names its disks: the family, or why it is unknown."""

    family: str | None
    reason: str = ""

    def name(self, index: int) -> str | None:
        """The guest's name of the attached disk ``index`` (``sdb`` for 1)."""
        return f"{self.family}{disk_letters(index)}" if self.family else None


def kernel_disk(spec: str) -> tuple[str, int] | None:
    """``/dev/sda2`` → (``sda``, 2); None for other names."""
    match = _KERNEL_NAME.match(spec)
    return (match["disk"], int(match["number"])) if match else None


def disk_letters(index: int) -> str:
    """0 → ``a``, 25 → ``z``, 26 → ``aa`` (the kernel's sd naming)."""
    letters = ""
    index += 1
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


def split_disk_name(name: str) -> tuple[str, int] | None:
    """``sdb`` → (``sd``, 1); None for a name outside the families."""
    match = _DISK_NAME.match(name)
    if match is None:
        return None
    index = 0
    for letter in match["letters"]:
        index = index * 26 + (ord(letter) - ord("a") + 1)
    return match["family"], index - 1


def _named(spec: str) -> tuple[str, int, int] | None:
    """``/dev/sdb3`` → (``sd``, 1, 3)."""
    kernel = kernel_disk(spec)
    split = split_disk_name(kernel[0]) if kernel else None
    return (split[0], split[1], kernel[1]) if kernel and split else None


def disk_naming(entries: list[TabEntry], root: AttachedPartition) -> DiskNaming:
    """The guest's disk naming, from how its fstab names the root (see the module docstring)."""
    root_entry = next((e for e in entries if e.mountpoint == "/"), None)
    if root_entry is not None and (named := _named(root_entry.spec)) is not None:
        family, index, number = named
        if (index, number) == (root.disk, root.number):
            return DiskNaming(family)
        return DiskNaming(
            None,
            f"the guest names its root {root_entry.spec}, but it is partition {root.number} "
            f"of disk {root.disk} as attached: the disks' order is not the guest's",
        )
    families = {named[0] for e in entries if (named := _named(e.spec)) is not None}
    if len(families) == 1:
        return DiskNaming(families.pop())
    if not families:
        return DiskNaming(None, "the guest names no disk by its kernel name")
    return DiskNaming(None, f"the guest mixes disk names ({', '.join(sorted(families))})")


def is_stable(spec: str) -> bool:
    return spec.startswith(STABLE_PREFIXES)


def _types_match(expected: str, found: str | None) -> bool:
    if not expected or expected in ("auto", "defaults"):
        return True
    if found is None:
        return False
    return found in _ALIASES.get(expected, {expected})


class DeviceMap:
    """Resolves the guest's device names against the attached disks' partitions."""

    def __init__(
        self, partitions: Iterable[AttachedPartition], naming: DiskNaming, disk_count: int = 1
    ) -> None:
        self.partitions = {(p.disk, p.number): p for p in partitions}
        self.naming = naming
        self.disk_count = disk_count

    def by_uuid(self, uuid: str) -> AttachedPartition | None:
        return next((p for p in self.partitions.values() if p.uuid == uuid), None)

    def by_label(self, label: str) -> AttachedPartition | None:
        return next((p for p in self.partitions.values() if p.label == label), None)

    def lookup(self, spec: str) -> AttachedPartition | None:
        """The partition any spec (UUID=, LABEL=, a device name) refers to, if known."""
        if spec.startswith("UUID="):
            return self.by_uuid(spec[5:].strip('"'))
        if spec.startswith("/dev/disk/by-uuid/"):
            return self.by_uuid(spec.rsplit("/", 1)[1])
        if spec.startswith("LABEL="):
            return self.by_label(spec[6:].strip('"'))
        return self.resolve(spec).partition

    def _locate(self, spec: str) -> tuple[int, int] | str:
        """(disk index, partition number) a device name means, or why it is unknown."""
        if (named := _named(spec)) is not None:
            family, index, number = named
            if self.naming.family is None:
                return f"the guest's disk naming is unknown: {self.naming.reason}"
            if family != self.naming.family:
                return f"{spec} is not a /dev/{self.naming.family}* name, as the guest's root is"
            if index >= self.disk_count:
                attached = ", ".join(f"/dev/{self.naming.name(i)}" for i in range(self.disk_count))
                return f"{spec} is on a disk that is not attached (attached: {attached})"
            return index, number
        if (match := _BY_ID.match(spec)) is not None:
            if self.disk_count != 1:
                return f"{spec} names a disk by id; with {self.disk_count} disks it is ambiguous"
            return 0, int(match["number"])
        return "not a device name this agent can resolve"

    def resolve(self, spec: str, fstype: str = "") -> Resolution:
        """Resolve a non-stable device name (see the module docstring for the rules)."""
        if is_stable(spec):
            return Resolution(None, "already a stable reference")
        where = self._locate(spec)
        if isinstance(where, str):
            return Resolution(None, where)
        index, number = where
        partition = self.partitions.get(where)
        disk = f"/dev/{self.naming.name(index)}" if self.naming.family else "this disk"
        if partition is None:
            return Resolution(None, f"{disk} has no partition {number}")
        if not partition.uuid:
            return Resolution(None, f"partition {number} of {disk} has no file system UUID")
        if not _types_match(fstype, partition.fstype):
            return Resolution(
                None,
                f"partition {number} of {disk} holds {partition.fstype or 'nothing'}, not {fstype}",
            )
        return Resolution(partition)
