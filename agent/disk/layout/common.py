"""What every format's metadata walk shares: the image's bytes and the "points past the end"
refusal.

A walk reads only metadata (headers, tables, markers): its cost grows with the number of
table entries, never with the amount of guest data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.errors import InvalidImage

SECTOR = 512
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
# A table larger than this is not a real image's (the largest real tables are a few hundred
# MiB: qcow2 L2 tables of a 64 TiB disk); refusing it keeps a forged header from making the
# agent read or allocate without bound.
MAX_TABLE_BYTES = 512 * MiB


@dataclass(frozen=True)
class ImageBytes:
    """The bytes of an image: ``size`` bytes of an open file from ``start`` (0: all of it)."""

    fd: int
    size: int
    start: int = 0

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` of the image; nothing past its end."""
        length = max(0, min(length, self.size - offset))
        return os.pread(self.fd, length, self.start + offset) if length else b""


@dataclass(frozen=True)
class Where:
    """The file a walk reads and how messages name it: ``image.path: <path>`` and, for a
    VMDK's extent file, which extent it is."""

    shown: Path
    part: str = ""  # "" for the image file itself, or e.g. "extent 2 (disk-s002.vmdk)"

    def name(self) -> str:
        return f"{self.shown} {self.part}" if self.part else str(self.shown)


def human(size: int) -> str:
    """A byte count as people read it: 1.2 GiB, 512.0 KiB, 17 bytes."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale:
            return f"{size / scale:.1f} {unit} ({size} bytes)"
    return f"{size} bytes"


def invalid(where: Where, problem: str) -> InvalidImage:
    """An image problem (not retried), its message naming the file."""
    return InvalidImage(f"image.path: {where.name()}: {problem}", phase="inspect")


def require_inside(
    image: ImageBytes,
    where: Where,
    what: str,
    offset: int,
    length: int,
    end_name: str = "the file ends",
) -> None:
    """Refuse ``what`` (``length`` bytes at ``offset``) unless it lies inside the file.

    Args:
        end_name: what ``image.size`` is, as the message says it ("the file ends").

    Raises:
        InvalidImage: naming ``what``, where it ends and where the file ends.
    """
    end = offset + length
    if end <= image.size:
        return
    if offset >= image.size:
        place = f"points to offset {human(offset)}"
    else:
        place = f"at offset {human(offset)} runs to {human(end)}"
    raise invalid(
        where,
        f"{what} {place}; {end_name} at {human(image.size)} — the file looks truncated "
        "(an interrupted copy or export?); copy the whole file again",
    )


def read_exactly(image: ImageBytes, where: Where, what: str, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``, refusing a table that does not fit in the file.

    Raises:
        InvalidImage: ``what`` is larger than any real image's, or ends past the file.
    """
    if length > MAX_TABLE_BYTES:
        raise invalid(where, f"{what} would be {human(length)}, larger than any real image's")
    require_inside(image, where, what, offset, length)
    return image.read(offset, length)
