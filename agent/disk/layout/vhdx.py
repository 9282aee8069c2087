"""VHDX ([MS-VHDX]): file identifier, two headers, two region tables, the metadata region and
the block allocation table (BAT).

The current header is the valid one (signature and CRC-32C) with the higher sequence
number; a region table points at the BAT and the metadata region; the metadata gives the
block size, the virtual size, the logical sector size and whether the disk has a parent (a
differencing disk, refused). Each BAT entry of a present payload block, or of a present
sector bitmap block, is an offset in MiB that must lie inside the file. A header whose log
GUID is set has log entries only a writable open could replay: refused, as h2k never writes
to a source.
"""

from __future__ import annotations

import struct
import uuid

from agent.disk.layout.common import (
    ImageBytes,
    KiB,
    MiB,
    Where,
    invalid,
    read_exactly,
    require_inside,
)
from agent.errors import UnsafeImage

HEADER_OFFSETS = (64 * KiB, 128 * KiB)
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
REGION_TABLE_SIZE = 64 * KiB
BAT_REGION = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f")
PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
HAS_PARENT = 1 << 1
PAYLOAD_PRESENT = (6, 7)  # FULLY_PRESENT, PARTIALLY_PRESENT
BITMAP_PRESENT = 6
MAX_METADATA_ENTRIES = 2047


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of VHDX headers and region tables."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _checksum_ok(block: bytes) -> bool:
    (stored,) = struct.unpack_from("<I", block, 4)
    return crc32c(block[:4] + bytes(4) + block[8:]) == stored


def check(image: ImageBytes, where: Where) -> None:
    """Walk the VHDX's headers, region table, metadata and BAT.

    Raises:
        UnsafeImage: a differencing VHDX (HasParent, or a parent locator).
        InvalidImage: no valid header or region table, a log to replay, or a region or a
            block past the end of the file.
    """
    if not image.read(0, 8) == b"vhdxfile":
        raise invalid(where, "not a VHDX image (no vhdxfile identifier)")
    header = _current_header(image, where)
    log_guid = header[48:64]
    if log_guid != bytes(16):
        raise _log_to_replay(where)
    regions = _regions(image, where)
    for name, (offset, length) in (
        ("BAT", regions[BAT_REGION]),
        ("metadata", regions[METADATA_REGION]),
    ):
        require_inside(image, where, f"the VHDX {name} region", offset, length)
    block_size, virtual_size, sector_size = _metadata(image, where, *regions[METADATA_REGION])
    _check_bat(image, where, regions[BAT_REGION], block_size, virtual_size, sector_size)


def _log_to_replay(where: Where) -> Exception:
    return invalid(
        where,
        "the VHDX header has a log GUID set: its log holds writes that were never applied "
        "(the VM or host stopped uncleanly), and only a writable open can replay them. h2k "
        "never writes to a source: attach the disk once in Hyper-V (or run `qemu-img check "
        "-r all` on a copy) and migrate the result",
    )


def _current_header(image: ImageBytes, where: Where) -> bytes:
    best: tuple[int, bytes] | None = None
    for offset in HEADER_OFFSETS:
        block = image.read(offset, 4 * KiB)
        if len(block) == 4 * KiB and block.startswith(b"head") and _checksum_ok(block):
            (sequence,) = struct.unpack_from("<Q", block, 8)
            if best is None or sequence > best[0]:
                best = (sequence, block)
    if best is None:
        raise invalid(where, "neither VHDX header (at 64 KiB, 128 KiB) is valid")
    return best[1]


def _regions(image: ImageBytes, where: Where) -> dict[uuid.UUID, tuple[int, int]]:
    for offset in REGION_TABLE_OFFSETS:
        table = image.read(offset, REGION_TABLE_SIZE)
        if len(table) < REGION_TABLE_SIZE or not table.startswith(b"regi"):
            continue
        if not _checksum_ok(table):
            continue
        (count,) = struct.unpack_from("<I", table, 8)
        regions = {}
        for index in range(min(count, 2047)):
            guid, file_offset, length, _required = struct.unpack_from(
                "<16sQII", table, 16 + 32 * index
            )
            regions[uuid.UUID(bytes_le=guid)] = (file_offset, length)
        if BAT_REGION in regions and METADATA_REGION in regions:
            return regions
    raise invalid(where, "no valid VHDX region table (at 192 KiB, 256 KiB) with a BAT and metadata")


def _metadata(image: ImageBytes, where: Where, offset: int, length: int) -> tuple[int, int, int]:
    region = read_exactly(image, where, "the VHDX metadata region", offset, length)
    if not region.startswith(b"metadata"):
        raise invalid(where, "the VHDX metadata table has no signature")
    (count,) = struct.unpack_from("<H", region, 10)
    items: dict[uuid.UUID, bytes] = {}
    for index in range(min(count, MAX_METADATA_ENTRIES)):
        guid, item_offset, item_length, _flags = struct.unpack_from(
            "<16sIII", region, 32 + 32 * index
        )
        if item_offset + item_length > len(region):
            raise invalid(where, f"VHDX metadata entry {index} lies outside its region")
        items[uuid.UUID(bytes_le=guid)] = region[item_offset : item_offset + item_length]
    try:
        block_size, flags = struct.unpack_from("<II", items[FILE_PARAMETERS])
        (virtual_size,) = struct.unpack_from("<Q", items[VIRTUAL_DISK_SIZE])
        (sector_size,) = struct.unpack_from("<I", items[LOGICAL_SECTOR_SIZE])
    except (KeyError, struct.error):
        raise invalid(
            where, "the VHDX metadata lacks file parameters, virtual size or logical sector size"
        ) from None
    if flags & HAS_PARENT or PARENT_LOCATOR in items:
        raise UnsafeImage(
            f"image.path: {where.name()} is a differencing VHDX (file parameters HasParent, "
            f"parent locator metadata item{_parent_path(items.get(PARENT_LOCATOR))}) whose "
            "data lives in its parent; merge it (Hyper-V: Edit Disk > Merge, or "
            "Merge-VHD) and migrate that"
        )
    if block_size < MiB or block_size & (block_size - 1) or sector_size not in (512, 4096):
        raise invalid(where, f"VHDX block size {block_size} / sector size {sector_size} invalid")
    return block_size, virtual_size, sector_size


def _parent_path(locator: bytes | None) -> str:
    # Key/value table: a 20-byte header (type GUID, reserved, count), then 12-byte entries
    # of key offset, value offset, key length, value length (UTF-16LE, offsets from start).
    if not locator or len(locator) < 20:
        return ""
    (count,) = struct.unpack_from("<H", locator, 18)
    for index in range(min(count, 64)):
        if 20 + 12 * index + 12 > len(locator):
            break
        key_off, value_off, key_len, value_len = struct.unpack_from(
            "<IIHH", locator, 20 + 12 * index
        )
        key = locator[key_off : key_off + key_len].decode("utf-16-le", errors="replace")
        if key in ("relative_path", "absolute_win32_path", "volume_path"):
            value = locator[value_off : value_off + value_len].decode("utf-16-le", "replace")
            return f" {key}={value!r}"
    return ""


def _check_bat(
    image: ImageBytes,
    where: Where,
    region: tuple[int, int],
    block_size: int,
    virtual_size: int,
    sector_size: int,
) -> None:
    chunk_ratio = (1 << 23) * sector_size // block_size
    payload_blocks = -(-virtual_size // block_size)
    entries = payload_blocks + (payload_blocks - 1) // chunk_ratio if payload_blocks else 0
    bat = read_exactly(image, where, "the VHDX BAT", region[0], min(entries * 8, region[1]))
    for index, (entry,) in enumerate(struct.iter_unpack("<Q", bat)):
        state = entry & 7
        bitmap = (index + 1) % (chunk_ratio + 1) == 0
        if (bitmap and state != BITMAP_PRESENT) or (not bitmap and state not in PAYLOAD_PRESENT):
            continue
        offset = (entry >> 20) * MiB
        what = f"BAT entry {index} ({'sector bitmap' if bitmap else 'payload block'})"
        require_inside(image, where, what, offset, MiB if bitmap else block_size)
