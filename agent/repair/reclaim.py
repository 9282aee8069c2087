"""Trimming the guest's mounted file systems, so the blocks they no longer use become holes.

Only file systems on a disk that is an overlay of the job (disk 0 of a repair, every disk of a
sparsified convert) are trimmed: their discards become zero clusters of the overlay, which
the single copy pass then skips. A file system whose check found errors it could not repair
is never trimmed: its free-space map may be wrong, and a trim would zero what it still uses.

The report's ``space_reclaim`` counts data bytes (``qemu-img map``: neither hole nor zero) in
each file system's byte range: ``source_data_bytes`` in the source, ``kept_data_bytes`` after
the trim (what the one copy pass read from the trimmed overlay, or what an in-place image
still holds), ``reclaimed_bytes`` the difference: what the trim gave back. The output holds at
most the kept bytes (qemu-img also leaves blocks of zeros out of it). ``discarded_bytes`` is
fstrim's own figure: the free space the file system discarded, which includes free space the
source never held data in, so it is no measure of the saving.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.disk.attach import AttachedPartition
from agent.disk.mount import trim
from agent.disk.overlay import Extent, bytes_within
from agent.errors import ToolFailed

log = logging.getLogger(__name__)

TRIMMED = "trimmed"
SKIPPED = "skipped"
FAILED = "failed"


@dataclass(frozen=True)
class MountedFilesystem:
    """A mounted file system as the trim step sees it."""

    mountpoint: str  # the guest's name for it ("/", "/boot"), or the partition's for a convert
    host_path: Path
    partition: AttachedPartition


@dataclass
class TrimResult:
    """What trimming one file system did, and (after the copy) what it saved."""

    mountpoint: str
    partition: AttachedPartition
    status: str
    reason: str = ""
    discarded_bytes: int | None = None
    allocated_before: int | None = None
    allocated_after: int | None = None

    @property
    def reclaimed_bytes(self) -> int | None:
        """Data bytes of the partition's range in the source that the trim left out."""
        if self.allocated_before is None or self.allocated_after is None:
            return None
        return max(0, self.allocated_before - self.allocated_after)

    def account(self, source: Sequence[Extent], kept: Sequence[Extent]) -> None:
        """Fill in the partition's data bytes in the source and after the trim."""
        part = self.partition
        self.allocated_before = bytes_within(source, part.offset, part.size)
        self.allocated_after = bytes_within(kept, part.offset, part.size)

    def describe(self) -> dict[str, Any]:
        return {
            "mountpoint": self.mountpoint,
            "disk": self.partition.disk,
            "partition": self.partition.number,
            "fstype": self.partition.fstype,
            "status": self.status,
            "reason": self.reason,
            "discarded_bytes": self.discarded_bytes,
            "source_data_bytes": self.allocated_before,
            "kept_data_bytes": self.allocated_after,
            "reclaimed_bytes": self.reclaimed_bytes,
        }


async def trim_filesystems(
    mounted: Sequence[MountedFilesystem],
    *,
    overlay_disks: Collection[int],
    damaged: Collection[tuple[int, int]] = (),
) -> list[TrimResult]:
    """Trim each mounted file system that lies on an overlay disk; one result for each.

    Args:
        overlay_disks: indexes of the attached disks that are overlays of this job.
        damaged: (disk, partition) of file systems whose check left errors.
    """
    results = []
    seen: set[tuple[int, int]] = set()
    for fs in mounted:
        key = (fs.partition.disk, fs.partition.number)
        if key in seen:
            continue
        seen.add(key)
        result = TrimResult(fs.mountpoint, fs.partition, SKIPPED)
        if fs.partition.disk not in overlay_disks:
            result.reason = "on another disk of the VM, which is written in place"
        elif key in damaged:
            result.reason = "its check left errors: its free space is not to be trusted"
        else:
            try:
                result.discarded_bytes = await trim(fs.host_path)
                result.status = TRIMMED
            except ToolFailed as exc:
                result.status, result.reason = FAILED, str(exc)
                log.warning("trim failed mountpoint=%s error=%s", fs.mountpoint, exc)
        results.append(result)
    return results


def reclaim_summary(
    results: Sequence[TrimResult], source_data: int | None, kept_data: int | None
) -> dict[str, Any]:
    """The report's ``space_reclaim`` section (whole disk and per file system)."""
    reclaimed = None
    if source_data is not None and kept_data is not None:
        reclaimed = max(0, source_data - kept_data)
    return {
        "enabled": True,
        "filesystems": [r.describe() for r in results],
        "source_data_bytes": source_data,
        "kept_data_bytes": kept_data,
        "reclaimed_bytes": reclaimed,
    }
