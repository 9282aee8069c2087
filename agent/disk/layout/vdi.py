"""VDI (VirtualBox): the header after the 64-byte text, then the block map.

Each block map entry is a block number (or unallocated / zero); block n's data lies at
``offset_data + n * block_size``. A differencing image (a snapshot: image type 4, or an undo
image, type 3) holds only what changed since its parent (``uuidLinkage``) and is refused.
"""

from __future__ import annotations

import struct
import uuid

from agent.disk.layout.common import ImageBytes, Where, invalid, read_exactly, require_inside
from agent.errors import UnsafeImage

SIGNATURE = 0xBEDA107F
# From offset 0x40: signature, version, header size, image type, flags, 256-byte comment,
# block map offset, data offset, geometry (4 x u32), unused, disk size, block size, block
# extra, blocks in image, blocks allocated, uuids of the image, last snapshot, link, parent.
HEADER = struct.Struct("<IIIII256sII4IIQIIII16s16s16s16s")
TYPE_DYNAMIC = 1
TYPE_FIXED = 2
TYPE_NAMES = {3: "undo", 4: "differencing"}
UNALLOCATED = 0xFFFFFFFF
ZERO = 0xFFFFFFFE


def check(image: ImageBytes, where: Where) -> None:
    """Walk the VDI's block map; every allocated block must lie inside the file.

    Raises:
        UnsafeImage: a differencing (or undo) image: its data lives in a parent.
        InvalidImage: a bad header, or the block map or a block past the end of the file.
    """
    raw = image.read(0x40, HEADER.size)
    if len(raw) < HEADER.size:
        raise invalid(where, "the VDI header is cut short — the file looks truncated")
    fields = HEADER.unpack(raw)
    signature, _version, _size, image_type = fields[0:4]
    bmap_offset, data_offset = fields[6], fields[7]
    block_size, block_extra, blocks = fields[14], fields[15], fields[16]
    link = fields[20]
    if signature != SIGNATURE:
        raise invalid(where, "not a VDI image (bad signature)")
    if image_type in TYPE_NAMES:
        raise UnsafeImage(
            f"image.path: {where.name()} is a VDI {TYPE_NAMES[image_type]} image (image type "
            f"{image_type}) whose data lives in its parent (uuidLinkage "
            f"{uuid.UUID(bytes_le=link)}); convert the parent with its snapshots merged "
            "(VBoxManage clonemedium) and migrate that"
        )
    if image_type not in (TYPE_DYNAMIC, TYPE_FIXED):
        raise invalid(where, f"VDI image type {image_type} is not dynamic (1) or fixed (2)")
    if block_size == 0 or block_extra:
        raise invalid(where, f"VDI block size {block_size} (+{block_extra} extra) is not valid")
    bmap = read_exactly(image, where, "the VDI block map", bmap_offset, blocks * 4)
    last = -1
    for (entry,) in struct.iter_unpack("<I", bmap):
        if entry not in (UNALLOCATED, ZERO) and entry > last:
            last = entry
    if last < 0:
        return
    # Blocks are laid out by number, so the highest one ends the data; find its entry.
    index = next(i for i, (e,) in enumerate(struct.iter_unpack("<I", bmap)) if e == last)
    what = f"block map entry {index} (block {last})"
    require_inside(image, where, what, data_offset + last * block_size, block_size)
