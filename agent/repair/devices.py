"""The guest's device names (``/dev/sda2``, ``/dev/disk/by-id/...-part2``) → this disk's UUIDs.

A VMware guest names its partitions by the controller's view (``/dev/sdaN``); on KVM with
virtio they become ``/dev/vdaN``, so every such reference must become ``UUID=``. A name is
resolved only when it certainly is a partition of *this* disk: the disk is the one the root
file system's fstab entry names, and the file system type in the guest's file must match what
blkid finds. Everything else is left alone, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from agent.disk.attach import AttachedPartition

_KERNEL_NAME = re.compile(r"^/dev/(?P<disk>(?:sd|hd|vd|xvd)[a-z]+)(?P<number>\d+)$")
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


def kernel_disk(spec: str) -> tuple[str, int] | None:
    """``/dev/sda2`` → (``sda``, 2); None for other names."""
    match = _KERNEL_NAME.match(spec)
    return (match["disk"], int(match["number"])) if match else None


def is_stable(spec: str) -> bool:
    return spec.startswith(STABLE_PREFIXES)


def _types_match(expected: str, found: str | None) -> bool:
    if not expected or expected in ("auto", "defaults"):
        return True
    if found is None:
        return False
    return found in _ALIASES.get(expected, {expected})


class DeviceMap:
    """Resolves the guest's device names against the attached disk's partitions."""

    def __init__(self, partitions: Iterable[AttachedPartition], disk: str | None) -> None:
        self.partitions = {p.number: p for p in partitions}
        self.disk = disk  # e.g. "sda": the guest's name for this disk, None when unknown

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

    def resolve(self, spec: str, fstype: str = "") -> Resolution:
        """Resolve a non-stable device name (see the module docstring for the rules)."""
        if is_stable(spec):
            return Resolution(None, "already a stable reference")
        number: int | None = None
        if (named := kernel_disk(spec)) is not None:
            disk, number = named
            if self.disk is None:
                return Resolution(None, "the guest's name for this disk is unknown")
            if disk != self.disk:
                return Resolution(None, f"{spec} is not on this disk (/dev/{self.disk})")
        elif (match := _BY_ID.match(spec)) is not None:
            number = int(match["number"])
        else:
            return Resolution(None, "not a device name this agent can resolve")
        partition = self.partitions.get(number)
        if partition is None:
            return Resolution(None, f"this disk has no partition {number}")
        if not partition.uuid:
            return Resolution(None, f"partition {number} has no file system UUID")
        if not _types_match(fstype, partition.fstype):
            return Resolution(
                None, f"partition {number} holds {partition.fstype or 'nothing'}, not {fstype}"
            )
        return Resolution(partition)
