"""VHD (Microsoft Virtual Hard Disk Image Format Specification; qemu's "vpc" driver).

Every VHD ends with a 512-byte footer (``conectix``). A fixed disk is its data followed by
the footer; a dynamic disk starts with a copy of the footer, then a dynamic disk header
(``cxsparse``) pointing at the block allocation table (BAT), whose entries are the sector
offsets of blocks (a sector bitmap, then the block's data). A differencing disk (footer disk
type 4) holds only what changed since its parent, found through the header's parent name and
parent locators: it is refused.
"""

from __future__ import annotations

import struct

from agent.disk.layout.common import (
    SECTOR,
    ImageBytes,
    Where,
    human,
    invalid,
    read_exactly,
    require_inside,
)
from agent.errors import UnsafeImage

FOOTER_COOKIE = b"conectix"
DYNAMIC_COOKIE = b"cxsparse"
TYPE_FIXED = 2
TYPE_DYNAMIC = 3
TYPE_DIFFERENCING = 4
UNALLOCATED = 0xFFFFFFFF
DYNAMIC_HEADER = 1024


def check(image: ImageBytes, where: Where) -> None:
    """Check the footer and, for a dynamic disk, walk the BAT.

    Raises:
        UnsafeImage: a differencing disk (its data lives in a parent).
        InvalidImage: no footer at the end, data shorter than the footer's size, or the BAT
            or a block past the end of the file.
    """
    head = image.read(0, SECTOR)
    tail = image.read(image.size - SECTOR, SECTOR) if image.size >= SECTOR else b""
    footer = tail if tail.startswith(FOOTER_COOKIE) else None
    if footer is None:
        if head.startswith(FOOTER_COOKIE) and len(head) == SECTOR:
            _refuse_differencing(image, where, head)
            if struct.unpack_from(">I", head, 60)[0] == TYPE_DYNAMIC:
                # The copy at the start leads to the BAT: name the first block cut off.
                _check_bat(image, where, struct.unpack_from(">Q", head, 16)[0], footer=0)
        raise invalid(
            where,
            "the VHD has no footer (conectix) in its last 512 bytes — the file looks "
            "truncated (or it is not a VHD)",
        )
    _refuse_differencing(image, where, footer)
    (data_offset,) = struct.unpack_from(">Q", footer, 16)
    (current_size,) = struct.unpack_from(">Q", footer, 48)
    (disk_type,) = struct.unpack_from(">I", footer, 60)
    if disk_type == TYPE_FIXED:
        if image.size - SECTOR < current_size:
            raise invalid(
                where,
                f"the fixed VHD's footer says {human(current_size)} of data but only "
                f"{human(image.size - SECTOR)} come before it — the file looks truncated",
            )
        return
    if disk_type != TYPE_DYNAMIC:
        raise invalid(where, f"VHD footer disk type {disk_type} is not fixed (2) or dynamic (3)")
    _check_bat(image, where, data_offset)


def _dynamic_header(image: ImageBytes, where: Where, offset: int) -> bytes:
    header = read_exactly(image, where, "the VHD dynamic disk header", offset, DYNAMIC_HEADER)
    if not header.startswith(DYNAMIC_COOKIE):
        raise invalid(where, "the VHD dynamic disk header (cxsparse) is missing or damaged")
    return header


def _check_bat(image: ImageBytes, where: Where, header_offset: int, footer: int = SECTOR) -> None:
    header = _dynamic_header(image, where, header_offset)
    table_offset, _version, entries, block_size = struct.unpack_from(">QIII", header, 16)
    if block_size == 0 or block_size % SECTOR:
        raise invalid(where, f"VHD block size {block_size} is not a multiple of 512")
    bitmap = -(-block_size // SECTOR // 8 // SECTOR) * SECTOR
    bat = read_exactly(image, where, "the VHD block allocation table", table_offset, entries * 4)
    # Blocks end before the footer at the end of the file.
    data_end = ImageBytes(image.fd, image.size - footer, image.start)
    ends = "the footer at the end of the file starts" if footer else "the file ends"
    for index, (sector,) in enumerate(struct.iter_unpack(">I", bat)):
        if sector != UNALLOCATED:
            what = f"BAT entry {index}"
            require_inside(data_end, where, what, sector * SECTOR, bitmap + block_size, ends)


def _refuse_differencing(image: ImageBytes, where: Where, footer: bytes) -> None:
    (disk_type,) = struct.unpack_from(">I", footer, 60)
    if disk_type != TYPE_DIFFERENCING:
        return
    (data_offset,) = struct.unpack_from(">Q", footer, 16)
    header = image.read(data_offset, DYNAMIC_HEADER)
    parent = ""
    if header.startswith(DYNAMIC_COOKIE):
        parent = header[64:576].decode("utf-16-be", errors="replace").rstrip("\x00")
    named = f" (parent unicode name {parent!r})" if parent else ""
    raise UnsafeImage(
        f"image.path: {where.name()} is a differencing VHD (footer disk type 4) whose data "
        f"lives in its parent{named}, found through its parent locators; merge it into its "
        "parent (or export the VM's disk without checkpoints) and migrate that"
    )
