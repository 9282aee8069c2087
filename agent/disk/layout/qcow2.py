"""qcow2 (qemu docs/interop/qcow2.txt): header, L1 table, L2 tables, refcount table.

Every L1 entry points at an L2 table, every L2 entry at a data cluster (or a compressed
run of sectors), every refcount table entry at a refcount block: each must lie inside the
file, or qemu reads zeros where the guest's data was.
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

MAGIC = b"QFI\xfb"
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_EXTENDED_L2 = 1 << 4
OFFSET_MASK = 0x00FFFFFFFFFFFE00  # bits 9-55 of L1, L2 and refcount table entries
COMPRESSED = 1 << 62


def check(image: ImageBytes, where: Where) -> None:
    """Walk the qcow2's tables; every entry must point inside the file.

    Raises:
        InvalidImage: a bad header, an encrypted or corrupt-marked image, or a table or an
            entry past the end of the file.
    """
    header = image.read(0, 104)
    if len(header) < 72 or not header.startswith(MAGIC):
        raise invalid(where, "not a qcow2 image (no QFI header)")
    version, _bo, _bs, cluster_bits, _size, crypt, l1_size, l1_offset = struct.unpack_from(
        ">IQIIQIIQ", header, 4
    )
    refcount_offset, refcount_clusters = struct.unpack_from(">QI", header, 48)
    if not 9 <= cluster_bits <= 21:
        raise invalid(where, f"qcow2 header cluster_bits {cluster_bits} is not 9 to 21")
    if crypt:
        raise invalid(where, "the qcow2 image is encrypted; h2k cannot read encrypted images")
    incompatible = 0
    if version >= 3 and len(header) >= 80:
        (incompatible,) = struct.unpack_from(">Q", header, 72)
    if incompatible & INCOMPAT_CORRUPT:
        raise invalid(where, "qemu marked this qcow2 image corrupt (incompatible bit 1)")
    cluster = 1 << cluster_bits
    l2_entry = 16 if incompatible & INCOMPAT_EXTENDED_L2 else 8
    l1 = read_exactly(image, where, "the qcow2 L1 table", l1_offset, l1_size * 8)
    for index, (entry,) in enumerate(struct.iter_unpack(">Q", l1)):
        l2_offset = entry & OFFSET_MASK
        if l2_offset:
            table = read_exactly(image, where, f"L1 entry {index}'s L2 table", l2_offset, cluster)
            _check_l2(image, where, index, table, l2_entry, cluster_bits)
    refcounts = read_exactly(
        image, where, "the qcow2 refcount table", refcount_offset, refcount_clusters * cluster
    )
    for index, (entry,) in enumerate(struct.iter_unpack(">Q", refcounts)):
        block = entry & ~0x1FF
        if block:
            require_inside(image, where, f"refcount table entry {index}", block, cluster)


def _check_l2(
    image: ImageBytes, where: Where, l1_index: int, table: bytes, entry_size: int, bits: int
) -> None:
    cluster = 1 << bits
    # Compressed descriptors: the host offset in the low x bits, the extra sector count above.
    x = 62 - (bits - 8)
    descriptors = table if entry_size == 8 else _first_halves(table)
    for index, (entry,) in enumerate(struct.iter_unpack(">Q", descriptors)):
        if entry & COMPRESSED:
            offset = entry & ((1 << x) - 1)
            sectors = ((entry >> x) & ((1 << (62 - x)) - 1)) + 1
            # The compressed bytes start at offset and end within the last counted sector;
            # the file may end anywhere in that sector, so only its first byte is required.
            last_sector = (offset & ~(SECTOR - 1)) + (sectors - 1) * SECTOR
            end = max(offset + 1, last_sector + 1)
            what = f"L2 table {l1_index} entry {index} (compressed cluster)"
            require_inside(image, where, what, offset, end - offset)
            continue
        offset = entry & OFFSET_MASK
        if offset:
            what = f"L2 table {l1_index} entry {index}"
            require_inside(image, where, what, offset, cluster)


def _first_halves(table: bytes) -> bytes:
    # Extended L2 entries are 128 bits: the cluster descriptor, then the subcluster bitmap.
    return b"".join(table[i : i + 8] for i in range(0, len(table), 16))
