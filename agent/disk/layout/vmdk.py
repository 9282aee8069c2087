"""VMDK (VMware Virtual Disk Format 1.1): sparse extent header, grain directory, grain tables;
for streamOptimized also the footer and end-of-stream marker; flat extents by their size.

monolithicSparse is one sparse extent; twoGbMaxExtentSparse is a descriptor naming several,
each walked on its own; streamOptimized is a sparse extent whose grains are compressed, each
preceded by a marker, and whose grain directory is found through the footer at the end.
"""

from __future__ import annotations

import struct

from agent.disk.layout.common import (
    SECTOR,
    ImageBytes,
    Where,
    invalid,
    read_exactly,
    require_inside,
)

MAGIC = b"KDMV"
HEADER = struct.Struct("<4sIIQQQQIQQQ?cccch")
FLAG_REDUNDANT_GT = 1 << 1
FLAG_ZEROED_GTE = 1 << 2
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
GD_AT_END = 0xFFFFFFFFFFFFFFFF
MARKER_EOS = 0
MARKER_FOOTER = 3
GRAIN_MARKER = struct.Struct("<QI")  # lba, size of the compressed data that follows


def check_sparse(image: ImageBytes, where: Where) -> int:
    """Walk one sparse extent (header, grain directory, grain tables); return its capacity
    in sectors.

    Raises:
        InvalidImage: a bad header, a missing footer or end-of-stream marker, or a table or
            grain past the end of the file.
    """
    header = _header(image, where, 0, "sparse extent header")
    flags, capacity, grain, gd_offset = header[2], header[3], header[4], header[9]
    if gd_offset == GD_AT_END:
        if not flags & FLAG_MARKERS:
            raise invalid(
                where,
                "the VMDK header puts the grain directory at the end of a "
                "file that is not a stream (no markers flag)",
            )
        _check_stream_end(image, where)
        header = _stream_footer(image, where)
        gd_offset = header[9]
    if not 1 <= grain <= 2048 or grain & (grain - 1):
        raise invalid(where, f"VMDK header grainSize {grain} is not a power of two up to 2048")
    per_table = header[7]
    if not 1 <= per_table <= 4096:
        raise invalid(where, f"VMDK header numGTEsPerGT {per_table} is not 1 to 4096")
    descriptor_offset, descriptor_sectors = header[5], header[6]
    if descriptor_offset:
        require_inside(
            image,
            where,
            "the embedded descriptor",
            descriptor_offset * SECTOR,
            descriptor_sectors * SECTOR,
        )
    tables = -(-capacity // (grain * per_table))
    directories = [("grain directory", gd_offset)]
    if flags & FLAG_REDUNDANT_GT and header[8]:
        directories.append(("redundant grain directory", header[8]))
    compressed = bool(flags & FLAG_COMPRESSED)
    grain_bytes = GRAIN_MARKER.size if compressed else grain * SECTOR
    last_grain = 0
    for name, offset in directories:
        directory = read_exactly(image, where, f"the {name}", offset * SECTOR, tables * 4)
        redundant = name != "grain directory"
        for table_index, (table_sector,) in enumerate(struct.iter_unpack("<I", directory)):
            if not table_sector:
                continue
            label = f"{'redundant ' if redundant else ''}grain table {table_index}"
            table = read_exactly(image, where, label, table_sector * SECTOR, per_table * 4)
            if redundant:
                continue  # its entries repeat the grain table's; qemu reads those
            sectors = struct.unpack(f"<{per_table}I", table)
            highest = max(sectors)
            last_grain = max(last_grain, highest)
            if highest * SECTOR + grain_bytes > image.size:
                entry = next(
                    i for i, s in enumerate(sectors) if s * SECTOR + grain_bytes > image.size
                )
                what = f"{label} entry {entry}"
                require_inside(image, where, what, sectors[entry] * SECTOR, grain_bytes)
    if not compressed:
        last_grain = 0
    if last_grain:
        # Grains never overlap, so only the last one can be cut: its marker says how long.
        _lba, size = GRAIN_MARKER.unpack(image.read(last_grain * SECTOR, GRAIN_MARKER.size))
        what = f"the compressed grain at sector {last_grain}"
        require_inside(image, where, what, last_grain * SECTOR, GRAIN_MARKER.size + size)
    if flags & FLAG_MARKERS:
        _check_stream_end(image, where)
    return int(capacity)


def _header(image: ImageBytes, where: Where, offset: int, what: str) -> tuple[int, ...]:
    raw = image.read(offset, HEADER.size)
    if len(raw) < HEADER.size or not raw.startswith(MAGIC):
        if offset == 0:
            raise invalid(where, "not a sparse VMDK extent (no KDMV header)")
        raise invalid(where, f"the VMDK {what} is missing — the file looks truncated")
    fields = HEADER.unpack(raw)
    return tuple(f if isinstance(f, int) else 0 for f in fields)


def _check_stream_end(image: ImageBytes, where: Where) -> None:
    # A stream (the markers flag) ends with an end-of-stream marker: a zero sector.
    cut = (
        "its end-of-stream marker is missing — the file looks truncated (an interrupted "
        "copy or export?); copy the whole file again"
    )
    if image.size < 2 * SECTOR or image.size % SECTOR:
        raise invalid(
            where,
            f"the streamOptimized VMDK is {image.size} bytes, not a whole number of sectors: "
            + cut,
        )
    if image.read(image.size - SECTOR, SECTOR) != bytes(SECTOR):
        raise invalid(where, "the streamOptimized VMDK does not end with a zero sector: " + cut)


def _stream_footer(image: ImageBytes, where: Where) -> tuple[int, ...]:
    # With the grain directory at the end, the stream ends: footer marker (1 sector), footer
    # (a header copy whose gdOffset is real), end-of-stream marker (1 sector).
    footer_marker = image.read(image.size - 3 * SECTOR, 16)
    if len(footer_marker) < 16 or struct.unpack_from("<QII", footer_marker) != (
        1,
        0,
        MARKER_FOOTER,
    ):
        raise invalid(
            where,
            "the streamOptimized VMDK has no footer before its end-of-stream marker — the "
            "file looks truncated",
        )
    footer = _header(image, where, image.size - 2 * SECTOR, "footer")
    if footer[9] == GD_AT_END:
        raise invalid(where, "the streamOptimized VMDK footer has no grain directory offset")
    return footer


def check_flat(image: ImageBytes, where: Where, offset_sectors: int, sectors: int) -> None:
    """A flat extent: the descriptor's sectors from its offset must be in the file.

    Raises:
        InvalidImage: the file is shorter.
    """
    require_inside(
        image,
        where,
        f"the flat extent's {sectors} sectors",
        offset_sectors * SECTOR,
        sectors * SECTOR,
    )
