"""Describe the guest on attached disks: attach read-only, mount read-only, read, release.

:func:`describe_mounted` is the part a job that has mounted the guest already (the repair)
can call; :func:`inspect_disks` attaches and mounts first. Attachments and mounts go through
:mod:`agent.disk.attach` and :mod:`agent.repair.mounting`, so they are journaled and released
in reverse order on every way out, including cancel.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.disk.attach import AttachedDisk, DiskImage, attached_disks
from agent.disk.journal import AttachmentJournal
from agent.errors import GuestNotFound
from agent.guest.boot import ESP_TYPES
from agent.guest.cpio import Listing
from agent.guest.describe import describe_guest, image_file, initramfs_images
from agent.guest.esp import unmounted_efi_binaries
from agent.guest.initramfs import read_initramfs
from agent.repair.mounting import MountedGuest, mount_guest

log = logging.getLogger(__name__)

Step = Callable[[str, str], None]  # (phase, message)


async def _unmounted_esp_binaries(
    mounted: MountedGuest, disks: Sequence[AttachedDisk]
) -> list[str]:
    """EFI binaries of ESPs the guest mount left unmounted, read with mtools."""
    done = set(mounted.guest.mounted.values())
    entries = {e.spec: e.mountpoint for e in mounted.guest.fstab}
    found: list[str] = []
    for partition in (p for d in disks for p in d.partitions):
        if partition.part_type not in ESP_TYPES or partition.fstype != "vfat":
            continue
        if (partition.disk, partition.number) in done:
            continue
        mountpoint = next(
            (point for spec, point in entries.items() if mounted.devices.lookup(spec) == partition),
            "/boot/efi",
        )
        found += await unmounted_efi_binaries(partition.device, mountpoint) or []
    return found


async def describe_mounted(
    mounted: MountedGuest, disks: Sequence[AttachedDisk], scratch: Path
) -> dict[str, Any]:
    """The description of a mounted guest (see :func:`agent.guest.describe.describe_guest`);
    initramfs images are read with the node's decoders, scratch files under ``scratch``
    (outside the guest) removed before this returns."""
    efi_files = await _unmounted_esp_binaries(mounted, disks)
    listings: dict[str, Listing] = {}
    for path, _version in initramfs_images(mounted.root):
        host = image_file(mounted.root, path)
        if host is not None:
            listings[path] = await read_initramfs(host, scratch)
    description = describe_guest(
        mounted.root.host_root,
        disks=disks,
        root_partition=mounted.guest.root_partition,
        devices=mounted.devices,
        initramfs=listings,
        efi_files=efi_files,
    )
    return description.describe()


async def describe_guest_into(
    mounted: MountedGuest, disks: Sequence[AttachedDisk], scratch: Path
) -> dict[str, Any]:
    """:func:`describe_mounted` with its own scratch directory (removed when empty), for a
    job that mounted the guest itself (the repair)."""
    scratch.mkdir(exist_ok=True)
    try:
        return await describe_mounted(mounted, disks, scratch)
    finally:
        with contextlib.suppress(OSError):
            scratch.rmdir()


def _remove_workdir(workdir: Path) -> None:
    # rmdir only: a recursive delete with something still mounted below would destroy it.
    for path in (workdir / "root", workdir):
        with contextlib.suppress(OSError):
            path.rmdir()


async def inspect_disks(
    images: Sequence[DiskImage],
    workdir: Path,
    journal: AttachmentJournal,
    *,
    timeout: float,
    step: Step,
) -> dict[str, Any]:
    """Attach ``images`` read-only, mount the guest read-only and describe it.

    Returns:
        ``{"guest": description}``, or ``{"guest": None, "guest_error": why}`` when no disk
        holds a Linux root file system.

    Raises:
        ValueError: an image is writable (inspection never is).
        ToolFailed: attaching or mounting failed (everything attached is released first).
    """
    if any(image.writable for image in images):
        raise ValueError("guest inspection attaches images read-only")
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        step("attach", f"attaching {len(images)} disk(s) read-only")
        async with (
            attached_disks(images, workdir, journal, timeout=timeout) as disks,
            contextlib.AsyncExitStack() as mounts,
        ):
            step("mount", "looking for the root file system (read-only, no journal replay)")
            try:
                mounted = await mount_guest(
                    mounts, disks, workdir, journal, read_only=True, best_effort=True
                )
            except GuestNotFound as exc:
                return {"guest": None, "guest_error": str(exc)}
            step("guest", "reading the guest's configuration")
            description = await describe_guest_into(mounted, disks, workdir / "scratch")
            description["not_mounted"] = mounted.guest.not_mounted
            step("detach", "unmounting and detaching")
        return {"guest": description}
    finally:
        _remove_workdir(workdir)
