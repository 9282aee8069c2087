"""Attach a disk image as block devices: one loop device per partition.

Formats other than raw are exported as a raw file by qemu-storage-daemon over FUSE first; a
raw image is loop-attached directly. Partitions come from the table (``sfdisk -J``) and get
their own loop device by offset and size (this kernel makes no partition nodes for loops);
a disk without a table is one loop device over the whole image. NBD is not used: the FUSE
path needs no kernel module and works wherever ``fuse``, ``loop`` and the daemon are present.

A VM's disks are attached together (:func:`attached_disks`), in the order its guest saw them:
each partition knows the index of its disk, and everything is released in reverse order.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import proc
from agent.disk.journal import AttachmentJournal
from agent.disk.loop import loop_device
from agent.disk.partitions import read_partition_table
from agent.disk.storage_daemon import fuse_export

log = logging.getLogger(__name__)

BLKID_TIMEOUT = 60.0
# MBR container partitions: their loop device would show the logical ones' contents twice.
EXTENDED_TYPES = frozenset({"5", "f", "85"})


@dataclass(frozen=True)
class AttachedPartition:
    """One partition of the attached disk and what blkid found on it."""

    number: int  # 0: the disk has no partition table, this is the whole disk
    offset: int
    size: int
    device: str
    part_type: str = ""
    fstype: str | None = None
    uuid: str | None = None
    label: str | None = None
    disk: int = 0  # index of its disk among the attached ones (0: the job's own disk)

    def describe(self) -> dict[str, Any]:
        return {
            "disk": self.disk,
            "number": self.number,
            "offset": self.offset,
            "size": self.size,
            "type": self.part_type,
            "fstype": self.fstype,
            "uuid": self.uuid,
            "label": self.label,
        }


@dataclass(frozen=True)
class DiskImage:
    """One image to attach: ``path`` is what tools open (a pinned ``/proc`` path or the file),
    ``shown`` its real path (for messages, and the name the kernel reports for a loop)."""

    path: Path
    format: str
    writable: bool
    index: int = 0
    disk_id: str = ""
    shown: Path | None = None
    discard: bool = False  # the guest's discards reach the image (a trim punches holes)

    @property
    def real_path(self) -> Path:
        return self.shown or self.path


@dataclass(frozen=True)
class AttachedDisk:
    method: str  # "fuse+loop" or "loop"
    raw_path: Path
    label: str | None  # "gpt", "dos" or None
    partitions: list[AttachedPartition]
    index: int = 0
    disk_id: str = ""
    image: Path | None = None
    format: str = ""
    writable: bool = False

    def partition(self, number: int) -> AttachedPartition | None:
        return next((p for p in self.partitions if p.number == number), None)

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "disk_id": self.disk_id or None,
            "image": str(self.image) if self.image else None,
            "format": self.format,
            "writable": self.writable,
            "attach_method": self.method,
            "partition_table": self.label,
        }


@dataclass(frozen=True)
class _Slice:
    number: int
    offset: int
    size: int
    part_type: str


def _slices(table: dict[str, Any] | None, disk_size: int) -> list[_Slice]:
    if table is None:
        return [_Slice(0, 0, disk_size, "")]
    sector = int(table.get("sectorsize", 512))
    slices = []
    for entry in table.get("partitions", []):
        kind = str(entry.get("type", "")).lower()
        size = int(entry.get("size", 0)) * sector
        if size <= 0 or kind in EXTENDED_TYPES or "number" not in entry:
            continue
        slices.append(_Slice(int(entry["number"]), int(entry["start"]) * sector, size, kind))
    return slices


async def probe_filesystem(device: str) -> dict[str, str]:
    """What ``blkid -p`` finds on a device (TYPE, UUID, LABEL...); empty when nothing."""
    argv = ["blkid", "-p", "-o", "export", device]
    try:
        result = await proc.run(argv, timeout=BLKID_TIMEOUT, capture_stdout=True)
    except proc.CommandFailed as exc:
        if exc.exit_code == 2:  # nothing recognised on the device
            return {}
        raise
    found = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key] = value
    return found


@contextlib.asynccontextmanager
async def attached_image(
    image: Path,
    fmt: str,
    workdir: Path,
    journal: AttachmentJournal,
    *,
    writable: bool,
    timeout: float,
    index: int = 0,
    disk_id: str = "",
    shown: Path | None = None,
    discard: bool = False,
) -> AsyncIterator[AttachedDisk]:
    """Attach ``image`` (qemu driver ``fmt``) for the body; released in reverse order.

    Args:
        index: the disk's place among a VM's disks (names its export, tags its partitions).
        shown: the image's real path when ``image`` is a pinned ``/proc/<pid>/fd/<n>`` path.
        discard: a writable image also takes discards (``fstrim``): the FUSE export passes
            them to qemu; a loop device over a file punches holes in it either way.

    Raises:
        ToolFailed: the export, a loop device or blkid failed.
    """
    async with contextlib.AsyncExitStack() as stack:
        reported_as: Path | None = None
        if fmt == "raw":
            raw_path, method, reported_as = image, "loop", shown
        else:
            raw_path = await stack.enter_async_context(
                fuse_export(
                    image,
                    fmt,
                    workdir,
                    journal,
                    writable=writable,
                    timeout=timeout,
                    name=f"disk{index}",
                    discard=discard,
                )
            )
            method = "fuse+loop"
        disk_size = raw_path.stat().st_size
        table = await read_partition_table(raw_path, "raw", disk_size, workdir)
        partitions = []
        for piece in _slices(table.table, disk_size):
            device = await stack.enter_async_context(
                loop_device(
                    raw_path,
                    journal,
                    offset=piece.offset,
                    size=piece.size,
                    read_only=not writable,
                    reported_as=reported_as,
                )
            )
            found = await probe_filesystem(device)
            partitions.append(
                AttachedPartition(
                    number=piece.number,
                    offset=piece.offset,
                    size=piece.size,
                    device=device,
                    part_type=piece.part_type,
                    fstype=found.get("TYPE"),
                    uuid=found.get("UUID"),
                    label=found.get("LABEL"),
                    disk=index,
                )
            )
        label = table.table.get("label") if table.table else None
        log.info(
            "image attached image=%s disk=%d method=%s partitions=%d",
            shown or image,
            index,
            method,
            len(partitions),
        )
        yield AttachedDisk(
            method=method,
            raw_path=raw_path,
            label=label,
            partitions=partitions,
            index=index,
            disk_id=disk_id,
            image=shown or image,
            format=fmt,
            writable=writable,
        )


@contextlib.asynccontextmanager
async def attached_disks(
    images: Sequence[DiskImage], workdir: Path, journal: AttachmentJournal, *, timeout: float
) -> AsyncIterator[list[AttachedDisk]]:
    """Attach a VM's disks together, in order; released in reverse order on every way out.

    Raises:
        ToolFailed: see :func:`attached_image`; what was attached before is released.
    """
    async with contextlib.AsyncExitStack() as stack:
        disks = []
        for image in images:
            disk = await stack.enter_async_context(
                attached_image(
                    image.path,
                    image.format,
                    workdir,
                    journal,
                    writable=image.writable,
                    timeout=timeout,
                    index=image.index,
                    disk_id=image.disk_id,
                    shown=image.shown,
                    discard=image.discard,
                )
            )
            disks.append(disk)
        yield disks
