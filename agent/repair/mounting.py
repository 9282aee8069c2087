"""Mount the guest: find the root file system by its contents, then /boot and /boot/efi."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.disk.attach import AttachedDisk, AttachedPartition
from agent.disk.journal import AttachmentJournal
from agent.disk.mount import mounted
from agent.errors import GuestNotFound, ToolFailed
from agent.repair.detect import (
    LINUX_FILESYSTEMS,
    GuestInfo,
    bootloaders,
    identify,
    looks_like_root,
)
from agent.repair.devices import DeviceMap
from agent.repair.guestfs import GuestRoot

log = logging.getLogger(__name__)

# Only what the repairs read and write; other file systems stay unmounted.
EXTRA_MOUNTPOINTS = ("/boot", "/boot/efi")


@dataclass(frozen=True)
class MountedGuest:
    root: GuestRoot
    guest: GuestInfo
    devices: DeviceMap


def mount_options(fstype: str | None, read_only: bool) -> list[str]:
    """Never set-uid or device files from a guest; read-only also skips journal replay."""
    options = ["nosuid", "nodev"]
    if read_only:
        options.append("ro")
        if fstype in ("ext3", "ext4"):
            options.append("noload")
        elif fstype == "xfs":
            options.append("norecovery")
    return options


async def _mount_partition(
    stack: contextlib.AsyncExitStack,
    partition: AttachedPartition,
    target: Path,
    journal: AttachmentJournal,
    read_only: bool,
) -> None:
    await stack.enter_async_context(
        mounted(
            partition.device,
            target,
            journal,
            fstype=partition.fstype,
            options=mount_options(partition.fstype, read_only),
        )
    )


async def _find_root(
    stack: contextlib.AsyncExitStack,
    disk: AttachedDisk,
    target: Path,
    journal: AttachmentJournal,
    read_only: bool,
) -> AttachedPartition | None:
    """Mount candidates one by one on ``target``; the first that looks like a root stays."""
    for partition in disk.partitions:
        if partition.fstype not in LINUX_FILESYSTEMS:
            continue
        candidate = contextlib.AsyncExitStack()
        try:
            await _mount_partition(candidate, partition, target, journal, read_only)
        except ToolFailed as exc:
            await candidate.aclose()
            log.warning("cannot mount candidate partition=%d error=%s", partition.number, exc)
            continue
        if looks_like_root(GuestRoot(target)):
            await stack.enter_async_context(candidate)
            return partition
        await candidate.aclose()
    return None


async def mount_guest(
    stack: contextlib.AsyncExitStack,
    disk: AttachedDisk,
    workdir: Path,
    journal: AttachmentJournal,
    *,
    read_only: bool,
) -> MountedGuest:
    """Mount the guest's root and its /boot, /boot/efi on ``workdir/root`` (unmounted by
    ``stack``).

    Raises:
        GuestNotFound: no partition holds a root file system.
        ToolFailed: a mount failed.
    """
    target = workdir / "root"
    target.mkdir(exist_ok=True)
    root_partition = await _find_root(stack, disk, target, journal, read_only)
    if root_partition is None:
        kinds = ", ".join(f"{p.number}:{p.fstype or '-'}" for p in disk.partitions)
        raise GuestNotFound(f"no partition holds a Linux root file system (partitions {kinds})")
    root = GuestRoot(target)
    guest = identify(root, root_partition)
    guest.mounted["/"] = root_partition.number
    devices = DeviceMap(disk.partitions, guest.disk)
    extra = [e for e in guest.fstab if e.mountpoint in EXTRA_MOUNTPOINTS]
    for entry in sorted(extra, key=lambda e: len(PurePosixPath(e.mountpoint).parts)):
        partition = devices.lookup(entry.spec)
        if partition is None or partition.number == root_partition.number:
            log.warning("guest mount not found spec=%s mountpoint=%s", entry.spec, entry.mountpoint)
            continue
        if not root.is_dir(entry.mountpoint):
            raise ToolFailed(f"the guest's {entry.mountpoint} is not a directory")
        where = root.resolve(entry.mountpoint)
        await _mount_partition(stack, partition, where, journal, read_only)
        guest.mounted[entry.mountpoint] = partition.number
    guest.bootloaders = bootloaders(root)  # again: /boot holds most of what says so
    return MountedGuest(root=root, guest=guest, devices=devices)
