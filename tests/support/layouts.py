"""Images written byte by byte from the formats' published layouts, without qemu-img.

Unit tests use them (no subprocess there), and they are the only way to make what qemu-img
cannot: differencing VHD, VHDX and VDI disks, a VMDK with a parentCID. Each builder takes the
guest's data as ``{block index: bytes}`` (a block of the format's allocation unit, see
``*_BLOCK``) and returns the whole file; tests cut or patch it from there.
"""

from __future__ import annotations

import struct
import uuid

from agent.disk.layout.vhdx import (
    BAT_REGION,
    FILE_PARAMETERS,
    LOGICAL_SECTOR_SIZE,
    METADATA_REGION,
    PARENT_LOCATOR,
    VIRTUAL_DISK_SIZE,
    crc32c,
)

SECTOR = 512
KiB = 1024
MiB = 1024 * KiB
QCOW2_BLOCK = 64 * KiB
VMDK_BLOCK = 64 * KiB
VDI_BLOCK = MiB
VHD_BLOCK = 2 * MiB
VHDX_BLOCK = MiB
Blocks = dict[int, bytes]


def _pad(data: bytes, size: int) -> bytes:
    return data + bytes(size - len(data))


def _place(image: bytearray, offset: int, data: bytes) -> None:
    if len(image) < offset + len(data):
        image.extend(bytes(offset + len(data) - len(image)))
    image[offset : offset + len(data)] = data


def qcow2(virtual_size: int, blocks: Blocks) -> bytes:
    """qcow2 v3, 64 KiB clusters: header, refcount table and block, L1, L2 tables, data."""
    c = QCOW2_BLOCK
    per_l2 = c // 8
    l1_size = -(-virtual_size // (c * per_l2))
    l2_of = sorted({index // per_l2 for index in blocks})
    l2_cluster = {table: 4 + n for n, table in enumerate(l2_of)}
    next_cluster = 4 + len(l2_of)
    image = bytearray(4 * c)
    header = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        b"QFI\xfb",
        3,
        0,
        0,
        16,
        virtual_size,
        0,
        l1_size,
        3 * c,
        c,
        1,
        0,
        0,
        0,
        0,
        0,
        4,
        104,
    )
    _place(image, 0, header)
    l1 = bytearray(l1_size * 8)
    for table, cluster in l2_cluster.items():
        struct.pack_into(">Q", l1, table * 8, cluster * c | 1 << 63)
    _place(image, 3 * c, bytes(l1))
    for table, cluster in l2_cluster.items():
        l2 = bytearray(c)
        for index in sorted(i for i in blocks if i // per_l2 == table):
            struct.pack_into(">Q", l2, (index % per_l2) * 8, next_cluster * c | 1 << 63)
            _place(image, next_cluster * c, _pad(blocks[index], c))
            next_cluster += 1
        _place(image, cluster * c, bytes(l2))
    refcounts = bytearray(c)
    for cluster in range(next_cluster):
        struct.pack_into(">H", refcounts, cluster * 2, 1)
    _place(image, 2 * c, bytes(refcounts))
    _place(image, c, struct.pack(">Q", 2 * c))
    return bytes(image)


def vmdk_sparse(
    virtual_size: int, blocks: Blocks, *, parent_cid: str = "ffffffff", name: str = "disk.vmdk"
) -> bytes:
    """A monolithicSparse VMDK: header, embedded descriptor, grain directory, tables, grains."""
    grain_sectors = VMDK_BLOCK // SECTOR
    per_table = 512
    capacity = virtual_size // SECTOR
    tables = -(-capacity // (grain_sectors * per_table))
    descriptor = (
        "# Disk DescriptorFile\nversion=1\nCID=1a2b3c4d\n"
        f'parentCID={parent_cid}\ncreateType="monolithicSparse"\n\n'
        f'RW {capacity} SPARSE "{name}"\n\nddb.virtualHWVersion = "4"\n'
    ).encode()
    gd_sector = 21
    gt_sector = gd_sector + -(-tables * 4 // SECTOR)
    overhead = gt_sector + tables * (per_table * 4 // SECTOR)
    overhead = -(-overhead // grain_sectors) * grain_sectors
    header = struct.pack(
        "<4sIIQQQQIQQQ?cccch",
        b"KDMV",
        1,
        1,
        capacity,
        grain_sectors,
        1,
        20,
        per_table,
        0,
        gd_sector,
        overhead,
        False,
        b"\n",
        b" ",
        b"\r",
        b"\n",
        0,
    )
    image = bytearray(overhead * SECTOR)
    _place(image, 0, header)
    _place(image, SECTOR, descriptor)
    for table in range(tables):
        struct.pack_into(
            "<I",
            image,
            gd_sector * SECTOR + table * 4,
            gt_sector + table * (per_table * 4 // SECTOR),
        )
    sector = overhead
    for index in sorted(blocks):
        table, entry = divmod(index, per_table)
        entry_at = (gt_sector + table * (per_table * 4 // SECTOR)) * SECTOR + entry * 4
        struct.pack_into("<I", image, entry_at, sector)
        _place(image, sector * SECTOR, _pad(blocks[index], VMDK_BLOCK))
        sector += grain_sectors
    return bytes(image)


def vdi(
    virtual_size: int, blocks: Blocks, *, image_type: int = 1, link: bytes = bytes(16)
) -> bytes:
    """A dynamic VDI (1 MiB blocks); ``image_type`` 4 and ``link`` make a differencing one."""
    count = -(-virtual_size // VDI_BLOCK)
    bmap_offset = 0x200
    data_offset = -(-(bmap_offset + count * 4) // MiB) * MiB
    header = struct.pack(
        "<IIIII256sII4IIQIIII16s16s16s16s",
        0xBEDA107F,
        0x00010001,
        0x190,
        image_type,
        0,
        b"",
        bmap_offset,
        data_offset,
        0,
        0,
        0,
        SECTOR,
        0,
        virtual_size,
        VDI_BLOCK,
        0,
        count,
        len(blocks),
        uuid.uuid4().bytes,
        uuid.uuid4().bytes,
        link,
        bytes(16),
    )
    image = bytearray(data_offset)
    _place(image, 0, _pad(b"<<< Oracle VM VirtualBox Disk Image >>>\n", 0x40))
    _place(image, 0x40, header)
    bmap = bytearray(b"\xff" * (count * 4))
    for number, index in enumerate(sorted(blocks)):
        struct.pack_into("<I", bmap, index * 4, number)
        _place(image, data_offset + number * VDI_BLOCK, _pad(blocks[index], VDI_BLOCK))
    _place(image, bmap_offset, bytes(bmap))
    return bytes(image)


def _vhd_checksum(data: bytearray, at: int) -> None:
    struct.pack_into(">I", data, at, ~sum(data) & 0xFFFFFFFF)


def vhd_footer(virtual_size: int, disk_type: int, data_offset: int) -> bytes:
    """The 512-byte VHD footer (Hyper-V's creator, so the size is the footer's)."""
    cylinders = min(65535, virtual_size // (16 * 63 * SECTOR))
    footer = bytearray(
        struct.pack(
            ">8sIIQI4sI4sQQHBBII16sB",
            b"conectix",
            2,
            0x00010000,
            data_offset,
            0,
            b"win ",
            0x000A0000,
            b"Wi2k",
            virtual_size,
            virtual_size,
            cylinders,
            16,
            63,
            disk_type,
            0,
            uuid.uuid4().bytes,
            0,
        )
    )
    footer = bytearray(_pad(bytes(footer), SECTOR))
    _vhd_checksum(footer, 64)
    return bytes(footer)


def vhd_dynamic(virtual_size: int, blocks: Blocks, *, parent: str | None = None) -> bytes:
    """A dynamic VHD (2 MiB blocks); with ``parent``, a differencing one naming it."""
    entries = -(-virtual_size // VHD_BLOCK)
    table_offset = 3 * SECTOR
    bat_bytes = -(-entries * 4 // SECTOR) * SECTOR
    footer = vhd_footer(virtual_size, 3 if parent is None else 4, SECTOR)
    header = bytearray(1024)
    struct.pack_into(
        ">8sQQIII",
        header,
        0,
        b"cxsparse",
        0xFFFFFFFFFFFFFFFF,
        table_offset,
        0x00010000,
        entries,
        VHD_BLOCK,
    )
    if parent is not None:
        name = parent.encode("utf-16-be")
        header[64 : 64 + len(name)] = name
        # One parent locator ("W2ru": a relative Windows path), its data after the BAT.
        struct.pack_into(
            ">4sIIIQ", header, 576, b"W2ru", SECTOR, len(name), 0, table_offset + bat_bytes
        )
    _vhd_checksum(header, 36)
    image = bytearray(table_offset + bat_bytes + (SECTOR if parent else 0))
    _place(image, 0, footer)
    _place(image, SECTOR, bytes(header))
    bat = bytearray(b"\xff" * bat_bytes)
    block_at = len(image)
    for index in sorted(blocks):
        struct.pack_into(">I", bat, index * 4, block_at // SECTOR)
        _place(image, block_at, b"\xff" * SECTOR + _pad(blocks[index], VHD_BLOCK))
        block_at += SECTOR + VHD_BLOCK
    _place(image, table_offset, bytes(bat))
    return bytes(image) + footer


def vhdx(virtual_size: int, blocks: Blocks, *, parent: str | None = None) -> bytes:
    """A VHDX (1 MiB blocks, 512-byte sectors): identifier, headers, region tables, log,
    metadata, BAT, payload. With ``parent``: HasParent and a parent locator naming it."""
    log_at, metadata_at, bat_at, payload_at = MiB, 2 * MiB, 3 * MiB, 4 * MiB
    image = bytearray(payload_at)
    _place(image, 0, b"vhdxfile" + "h2k tests".encode("utf-16-le"))
    for number, offset in enumerate((64 * KiB, 128 * KiB)):
        head = bytearray(4 * KiB)
        struct.pack_into(
            "<4sIQ16s16s16sHHIQ",
            head,
            0,
            b"head",
            0,
            number + 1,
            uuid.uuid4().bytes,
            uuid.uuid4().bytes,
            bytes(16),
            0,
            1,
            MiB,
            log_at,
        )
        struct.pack_into("<I", head, 4, crc32c(bytes(head)))
        _place(image, offset, bytes(head))
    regions = bytearray(64 * KiB)
    struct.pack_into("<4sIII", regions, 0, b"regi", 0, 2, 0)
    struct.pack_into("<16sQII", regions, 16, BAT_REGION.bytes_le, bat_at, MiB, 1)
    struct.pack_into("<16sQII", regions, 48, METADATA_REGION.bytes_le, metadata_at, MiB, 1)
    struct.pack_into("<I", regions, 4, crc32c(bytes(regions)))
    _place(image, 192 * KiB, bytes(regions))
    _place(image, 256 * KiB, bytes(regions))
    items = [
        (FILE_PARAMETERS, struct.pack("<II", VHDX_BLOCK, 2 if parent else 0), 4),
        (VIRTUAL_DISK_SIZE, struct.pack("<Q", virtual_size), 6),
        (uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746"), uuid.uuid4().bytes, 6),
        (LOGICAL_SECTOR_SIZE, struct.pack("<I", SECTOR), 6),
        (uuid.UUID("cda348c7-445d-4471-9cc9-e9885251c556"), struct.pack("<I", 4096), 6),
    ]
    if parent is not None:
        items.append((PARENT_LOCATOR, _parent_locator(parent), 4))
    table = bytearray(64 * KiB)
    struct.pack_into("<8sHH", table, 0, b"metadata", 0, len(items))
    item_at = 64 * KiB
    for number, (guid, value, flags) in enumerate(items):
        struct.pack_into(
            "<16sIII", table, 32 + 32 * number, guid.bytes_le, item_at, len(value), flags
        )
        _place(image, metadata_at + item_at, value)
        item_at += -(-len(value) // 4096) * 4096
    _place(image, metadata_at, bytes(table))
    bat = bytearray(MiB)
    offset = payload_at
    for index in sorted(blocks):
        struct.pack_into("<Q", bat, index * 8, 6 | (offset // MiB) << 20)
        _place(image, offset, _pad(blocks[index], VHDX_BLOCK))
        offset += VHDX_BLOCK
    _place(image, bat_at, bytes(bat))
    return bytes(image)


def _parent_locator(parent: str) -> bytes:
    pairs = [("parent_linkage", "{" + str(uuid.uuid4()) + "}"), ("relative_path", parent)]
    header = struct.pack(
        "<16sHH", uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913").bytes_le, 0, len(pairs)
    )
    strings = b""
    entries = b""
    base = len(header) + 12 * len(pairs)
    for key, value in pairs:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        entries += struct.pack(
            "<IIHH", base + len(strings), base + len(strings) + len(k), len(k), len(v)
        )
        strings += k + v
    return header + entries + strings
