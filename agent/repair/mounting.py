"""Mount the guest: find the root file system by its contents on any attached disk, then the
guest's other file systems per its fstab (/boot, /boot/efi, /var on a second disk...)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from agent.repair.fstab import TabEntry
from agent.repair.guestfs import GuestRoot

log = logging.getLogger(__name__)

# Mounted whatever happens (the boot repairs need them): a missing directory fails the job.
REQUIRED_MOUNTPOINTS = ("/boot", "/boot/efi")
MOUNTABLE = LINUX_FILESYSTEMS | {"vfat"}


@dataclass(frozen=True)
class MountedGuest:
    root: GuestRoot
    guest: GuestInfo
    devices: DeviceMap
    # guest mount point -> where it is mounted on the agent (for trimming each one).
    host_paths: dict[str, Path] = field(default_factory=dict)


def mount_options(fstype: str | None, read_only: bool) -> list[str]:
    """Never set-uid or device files from a guest; read-only also skips journal replay."""
    options = ["nosuid", "nodev"]
    if fstype in ("ext4",) and not read_only:
        # No background zeroing of never-used inode tables: it writes blocks the repair did
        # not mean to change (and that the copy pass would then read).
        options.append("noinit_itable")
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
    partitions: list[AttachedPartition],
    target: Path,
    journal: AttachmentJournal,
    read_only: bool,
) -> AttachedPartition | None:
    """Mount candidates one by one on ``target``; the first that looks like a root stays."""
    for partition in partitions:
        if partition.fstype not in LINUX_FILESYSTEMS:
            continue
        candidate = contextlib.AsyncExitStack()
        try:
            await _mount_partition(candidate, partition, target, journal, read_only)
        except ToolFailed as exc:
            await candidate.aclose()
            log.warning(
                "cannot mount candidate disk=%d partition=%d error=%s",
                partition.disk,
                partition.number,
                exc,
            )
            continue
        if looks_like_root(GuestRoot(target)):
            await stack.enter_async_context(candidate)
            return partition
        await candidate.aclose()
    return None


def kernel_has_filesystem(fstype: str) -> bool:
    """Whether the agent's kernel can mount ``fstype`` now (loaded or built in)."""
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())
    except OSError:
        return True  # let mount say what is wrong


def _to_mount(
    entry: TabEntry, devices: DeviceMap, guest: GuestInfo
) -> tuple[AttachedPartition | None, str]:
    """The partition an fstab entry mounts (None: left unmounted) and why not."""
    partition = devices.lookup(entry.spec)
    if partition is None:
        why = devices.resolve(entry.spec, entry.fstype).reason
        return None, f"{entry.spec} is not on an attached disk ({why})"
    if partition.fstype not in MOUNTABLE:
        return None, f"{entry.spec} holds {partition.fstype or 'nothing'}"
    if partition.fstype == "vfat" and not kernel_has_filesystem("vfat"):
        return None, f"{entry.spec} is vfat and this node's kernel has no vfat driver"
    if (partition.disk, partition.number) in guest.mounted.values():
        return None, f"{entry.spec} is mounted already"
    return partition, ""


async def _mount_fstab(
    stack: contextlib.AsyncExitStack,
    root: GuestRoot,
    guest: GuestInfo,
    devices: DeviceMap,
    journal: AttachmentJournal,
    read_only: bool,
    host_paths: dict[str, Path],
    best_effort: bool = False,
) -> None:
    """Mount the guest's other file systems as its boot would: fstab order by depth, those
    on the attached disks only, nothing ``noauto`` (except /boot and /boot/efi)."""
    entries = [
        e
        for e in guest.fstab
        if e.mountpoint.startswith("/") and e.mountpoint != "/" and e.fstype != "swap"
    ]
    for entry in sorted(entries, key=lambda e: len(PurePosixPath(e.mountpoint).parts)):
        required = entry.mountpoint in REQUIRED_MOUNTPOINTS
        if "noauto" in entry.options and not required:
            continue
        partition, why = _to_mount(entry, devices, guest)
        if partition is None:
            if entry.spec.startswith(("/dev/", "UUID=", "LABEL=")):
                log.warning("guest mount left mountpoint=%s reason=%s", entry.mountpoint, why)
                guest.not_mounted.append(f"{entry.mountpoint}: {why}")
            continue
        if not root.is_dir(entry.mountpoint):
            if required:
                raise ToolFailed(f"the guest's {entry.mountpoint} is not a directory")
            guest.not_mounted.append(f"{entry.mountpoint}: not a directory in the guest")
            continue
        where = root.resolve(entry.mountpoint)
        try:
            await _mount_partition(stack, partition, where, journal, read_only)
        except ToolFailed as exc:
            if not best_effort:
                raise
            guest.not_mounted.append(f"{entry.mountpoint}: {exc}")
            continue
        guest.mounted[entry.mountpoint] = (partition.disk, partition.number)
        host_paths[entry.mountpoint] = where


async def mount_guest(
    stack: contextlib.AsyncExitStack,
    disks: Sequence[AttachedDisk],
    workdir: Path,
    journal: AttachmentJournal,
    *,
    read_only: bool,
    best_effort: bool = False,
) -> MountedGuest:
    """Mount the guest's root (found on any attached disk) on ``workdir/root`` and its other
    file systems per its fstab under it; all are unmounted by ``stack``, in reverse order.
    ``best_effort`` (inspection): a file system other than the root that fails to mount
    (say, vfat on a kernel without it) is listed in ``not_mounted`` instead of failing.

    Raises:
        GuestNotFound: no partition holds a root file system.
        ToolFailed: a mount failed.
    """
    target = workdir / "root"
    target.mkdir(exist_ok=True)
    partitions = [p for disk in disks for p in disk.partitions]
    root_partition = await _find_root(stack, partitions, target, journal, read_only)
    if root_partition is None:
        kinds = ", ".join(f"{p.disk}:{p.number}:{p.fstype or '-'}" for p in partitions)
        raise GuestNotFound(
            f"no partition of the {len(disks)} attached disk(s) holds a Linux root file system "
            f"(disk:partition:type {kinds})"
        )
    root = GuestRoot(target)
    guest = identify(root, root_partition)
    guest.mounted["/"] = (root_partition.disk, root_partition.number)
    devices = DeviceMap(partitions, guest.naming, len(disks))
    host_paths = {"/": target}
    await _mount_fstab(stack, root, guest, devices, journal, read_only, host_paths, best_effort)
    guest.bootloaders = bootloaders(root)  # again: /boot holds most of what says so
    return MountedGuest(root=root, guest=guest, devices=devices, host_paths=host_paths)
