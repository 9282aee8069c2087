"""Checks on an untrusted image made by reading its header in Python, before qemu-img runs.

``qemu-img info`` already opens every file an image references (a qcow2 backing file, a qcow2
external data file, the extents of a VMDK descriptor): checking its output afterwards is too
late. So the agent reads the header itself first:

- the format: named by the job, or sniffed from magic bytes here (qemu-img never probes, and a
  file that sniffs as nothing known is refused: raw is never guessed);
- qcow2: refused with a backing file or an external data file;
- VMDK: refused with a parent (``parentFileNameHint``, a ``parentCID`` other than
  ffffffff) or an extent outside the image's directory; the extents inside it are pinned
  (see :mod:`agent.paths`) and qemu-img reads a copy of the descriptor whose extent names are
  the pinned ``/proc/<pid>/fd/<n>`` paths;
- every format: the image is whole (:mod:`agent.disk.layout` walks its metadata: each table
  and each entry must lie inside the file, or inside its extent file for a VMDK), and it is
  no differencing disk (VHD disk type 4, VHDX HasParent, VDI differencing).

The image can be a byte range of the file (a disk inside an OVA): every header is then read
relative to the range, which is treated as the whole file. Such a VMDK must be a single sparse
file (monolithicSparse or streamOptimized, what an OVA holds): a descriptor with extent files
is refused, as there is nothing beside an OVA member for it to name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.disk import layout
from agent.disk.layout import ImageBytes, Where, vmdk
from agent.disk.qemu_img import ByteRange, ToolImage, source_filename
from agent.errors import InvalidImage, UnsafeImage
from agent.paths import PathPolicy, PinnedFile, pinned_input

__all__ = [
    "ImageBytes",
    "SafeInput",
    "check_free_space",
    "check_qcow2",
    "safe_input",
    "sniff_format",
    "vmdk_descriptor",
    "vmdk_extents",
]

SECTOR = 512
QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXT_DATA_FILE = 0x44415441
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
VMDK_SPARSE_MAGIC = b"KDMV"
VMDK_TEXT_MAGIC = b"# Disk DescriptorFile"
MAX_DESCRIPTOR_BYTES = 1024 * 1024
MAX_HEADER_EXTENSIONS = 64
# qemu reads a sparse VMDK's descriptor here for parentFileNameHint, whatever the header says.
QEMU_SPARSE_DESCRIPTOR = (0x200, 20 * SECTOR)
# Any line qemu could take for an extent: access mode first, the file name in double quotes.
_EXTENT = re.compile(r'^\s*(RW|RDONLY|NOACCESS)\b[^"]*"([^"\r\n]*)"')
# Its parts, as the format defines them: access, size in sectors, type, "file", [offset].
_EXTENT_PARTS = re.compile(
    r'^\s*(?:RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"[^"\r\n]*"(?:\s+(\d+))?', re.IGNORECASE
)
_PARENT_CID = re.compile(
    r"^[ \t]*parentCID[ \t]*=[ \t]*\"?([^\s\"]*)", re.IGNORECASE | re.MULTILINE
)
NO_PARENT_CID = "ffffffff"


def sniff_format(fd: int, size: int, start: int = 0) -> str | None:
    """The qemu driver an image's magic bytes say, or None when nothing known matches.

    Args:
        fd: the open file.
        size: the image's size in bytes.
        start: where the image starts in the file (a disk inside an OVA).
    """
    return _sniff(ImageBytes(fd, size, start))


def _sniff(image: ImageBytes) -> str | None:
    head = image.read(0, 1024)
    size = image.size
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    if head.startswith(VMDK_SPARSE_MAGIC) or head.startswith(VMDK_TEXT_MAGIC):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head[64:68] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if head.startswith(b"conectix"):
        return "vpc"
    if size >= SECTOR and image.read(size - SECTOR, 8) == b"conectix":
        return "vpc"
    if head.startswith(b"QED\x00"):
        return "qed"  # not supported; named so the refusal says what it is
    return None


def check_qcow2(image: ImageBytes, shown: Path) -> None:
    """Refuse a qcow2 with a backing file or an external data file (header read directly).

    Raises:
        UnsafeImage: naming what the header references.
    """
    header = image.read(0, 112)
    if len(header) < 72 or not header.startswith(QCOW2_MAGIC):
        raise UnsafeImage(f"image.path: {shown} is not a qcow2 image (bad header)")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", header, 4)
    if backing_offset:
        name = image.read(backing_offset, min(backing_size, 1023)).decode(errors="replace")
        raise UnsafeImage(
            f"image.path: {shown} has a backing file ({name}); images with backing files "
            "are refused"
        )
    if version < 3:
        return
    if len(header) < 104:  # a version 3 header is at least 104 bytes
        raise InvalidImage(
            f"image.path: {shown}: the qcow2 version 3 header needs 104 bytes; the file ends at "
            f"{len(header)} bytes — the file looks truncated",
            phase="inspect",
        )
    incompatible, _compat, _autoclear, _refcount_order, header_length = struct.unpack_from(
        ">QQQII", header, 72
    )
    _check_qcow2_extensions(image, shown, header_length)  # names the data file, when it can
    if incompatible & QCOW2_INCOMPAT_DATA_FILE:
        raise UnsafeImage(f"image.path: {shown} has an external data file; refused")


def _check_qcow2_extensions(image: ImageBytes, shown: Path, offset: int) -> None:
    for _ in range(MAX_HEADER_EXTENSIONS):
        kind_length = image.read(offset, 8)
        if len(kind_length) < 8:
            return
        kind, length = struct.unpack(">II", kind_length)
        if kind == 0:
            return
        if kind == QCOW2_EXT_DATA_FILE:
            name = image.read(offset + 8, min(length, 1023)).decode(errors="replace")
            raise UnsafeImage(f"image.path: {shown} has an external data file ({name}); refused")
        offset += 8 + (length + 7) // 8 * 8


def vmdk_descriptor(image: ImageBytes, shown: Path) -> str:
    """Every descriptor text of a VMDK qemu might read: the whole text file, or for a sparse
    file both the one its header points at and the fixed window qemu reads parents from.

    Raises:
        UnsafeImage: a text descriptor larger than 1 MiB.
    """
    head = image.read(0, 64)
    if not head.startswith(VMDK_SPARSE_MAGIC):
        if image.size > MAX_DESCRIPTOR_BYTES:
            raise InvalidImage(
                f"image.format: {shown} is not a VMDK: it has no sparse extent header (KDMV) "
                f"and at {image.size} bytes it is too large to be a descriptor file (at most "
                '1 MiB); if it is a raw disk or a flat extent, name format "raw" (or give '
                "the descriptor that names it)",
                phase="inspect",
            )
        text = image.read(0, image.size).decode("utf-8", errors="replace")
        if not _EXTENT.search(text) and "disk descriptorfile" not in text.lower():
            raise InvalidImage(
                f"image.format: {shown} is not a VMDK: no sparse extent header (KDMV), and "
                "as text it is no descriptor (no '# Disk DescriptorFile', no extent lines)",
                phase="inspect",
            )
        return text
    if len(head) < 44:
        raise InvalidImage(
            f"image.path: {shown}: the VMDK sparse extent header is cut short ({len(head)} "
            "bytes) — the file looks truncated; copy the whole file again",
            phase="inspect",
        )
    offset, length = struct.unpack_from("<QQ", head, 28)
    parts = [image.read(*QEMU_SPARSE_DESCRIPTOR)]
    if offset:
        parts.append(image.read(offset * SECTOR, min(length * SECTOR, MAX_DESCRIPTOR_BYTES)))
    return "\n".join(p.replace(b"\x00", b"\n").decode("utf-8", errors="replace") for p in parts)


@dataclass(frozen=True)
class Extent:
    line: int
    name: str
    sectors: int | None = None  # None: a line whose parts the format does not define
    kind: str = ""  # SPARSE, FLAT, VMFS, ZERO, ... (upper case)
    offset: int = 0  # a flat extent's first sector in its file


def vmdk_extents(descriptor: str, shown: Path) -> list[Extent]:
    """The extent lines of a descriptor.

    Raises:
        UnsafeImage: the descriptor names a parent image (a delta disk).
    """
    # qemu looks for the parent with a plain substring search, anywhere in the text.
    if "parentfilenamehint" in descriptor.lower():
        raise UnsafeImage(
            f"image.path: {shown} is a delta VMDK with a parent (its descriptor has "
            "parentFileNameHint) whose data lives in its parent; consolidate its snapshots "
            "and migrate that"
        )
    for cid in _PARENT_CID.finditer(descriptor):
        if cid.group(1).lower() != NO_PARENT_CID:
            raise UnsafeImage(
                f"image.path: {shown} is a delta VMDK with a parent (its descriptor has "
                f"parentCID={cid.group(1)}, not ffffffff) whose data lives in its parent; "
                "consolidate its snapshots and migrate that"
            )
    extents = []
    for number, line in enumerate(descriptor.splitlines()):
        if not line or line.isspace():
            continue  # most of a sparse file's descriptor window is NUL padding
        match = _EXTENT.match(line)
        if match:
            parts = _EXTENT_PARTS.match(line)
            if parts is None:
                extents.append(Extent(number, match.group(2)))
                continue
            sectors, kind, offset = parts.groups()
            extents.append(
                Extent(number, match.group(2), int(sectors), kind.upper(), int(offset or 0))
            )
    return extents


def _extent_path(directory: Path, extent: Extent, shown: Path) -> Path:
    name = extent.name
    protocol = name.split("/", 1)[0]
    if ":" in protocol:
        raise UnsafeImage(f"image.path: {shown} has an extent with a protocol ({name}); refused")
    resolved = Path(os.path.realpath(directory / name))
    if not resolved.is_relative_to(directory):
        raise UnsafeImage(
            f"image.path: {shown} has an extent outside its directory ({name} resolves to "
            f"{resolved}); refused"
        )
    return resolved


@dataclass(frozen=True)
class SafeInput:
    """What qemu-img is given for a checked image: the driver and a path it cannot escape."""

    format: str
    tool_path: ToolImage
    # For a byte range: the block node qemu-img reads (the only "extent" it may report).
    range_node: dict[str, object] | None = None


@contextlib.contextmanager
def safe_input(
    policy: PathPolicy,
    pinned: PinnedFile,
    fmt: str | None,
    scratch_dir: Path,
    byte_range: ByteRange | None = None,
) -> Iterator[SafeInput]:
    """Check an image before any tool opens it; yield what to hand qemu-img.

    Args:
        policy: the agent's path policy (extents must pass it too).
        pinned: the input, already opened and verified.
        fmt: the qemu driver the job named, or None to sniff it here.
        scratch_dir: agent-private space for a rewritten VMDK descriptor.
        byte_range: the part of the file that is the image (already checked to lie inside
            it), or None for the whole file.

    Raises:
        UnsafeImage: unknown or unsupported format, backing file, external data file,
            parent or an extent outside the image's directory; in a byte range, a VMDK that
            is not a single sparse file.
    """
    shown = pinned.path
    if byte_range is None:
        image = ImageBytes(pinned.fd, pinned.st.st_size)
    else:
        image = ImageBytes(pinned.fd, byte_range.size, byte_range.offset)
    if fmt is None:
        fmt = _sniff(image)
        if fmt is None:
            raise UnsafeImage(
                f"image.format: {shown} was probed as raw (no known image header); name the "
                'format in the job (format: "raw") if it really is a raw image'
            )
    if fmt == "qcow2":
        check_qcow2(image, shown)
    layout.check_whole(fmt, image, Where(shown))
    whole = SafeInput(
        fmt,
        source_filename(pinned.tool_path, byte_range),
        byte_range.node(pinned.tool_path) if byte_range is not None else None,
    )
    if fmt != "vmdk":
        yield whole
        return
    descriptor = vmdk_descriptor(image, shown)
    extents = vmdk_extents(descriptor, shown)
    if image.read(0, 4) == VMDK_SPARSE_MAGIC:
        # qemu reads a sparse VMDK's data from the file itself and never opens the extent
        # lines of its embedded descriptor (VMware writes its own paths there).
        vmdk.check_sparse(image, Where(shown))
        yield whole
        return
    if byte_range is not None:
        raise UnsafeImage(
            f"image.path: the VMDK in {shown} at parameters.migration.source_offset "
            f"{byte_range.offset} is a descriptor with {len(extents)} extent file(s); a disk "
            "inside a byte range (an OVA) must be a single-file monolithicSparse or "
            "streamOptimized VMDK"
        )
    with contextlib.ExitStack() as stack:
        lines = descriptor.splitlines()
        if not extents:
            raise InvalidImage(
                f"image.path: {shown}: the VMDK descriptor names no extent", phase="inspect"
            )
        for number, extent in enumerate(extents, start=1):
            path = _extent_path(shown.parent, extent, shown)
            extent_file = stack.enter_context(pinned_input(policy, path, "image.path extent"))
            _check_extent(extent_file, extent, Where(shown, f"extent {number} ({extent.name})"))
            lines[extent.line] = lines[extent.line].replace(
                f'"{extent.name}"', f'"{extent_file.tool_path}"', 1
            )
        copy = _write_private(scratch_dir, "\n".join(lines) + "\n")
        stack.callback(_unlink, copy)
        yield SafeInput(fmt, copy)


def _check_extent(extent_file: PinnedFile, extent: Extent, where: Where) -> None:
    # The extent's file must hold what the descriptor line says it does.
    image = ImageBytes(extent_file.fd, extent_file.st.st_size)
    if extent.kind in ("SPARSE", "VMFSSPARSE", "SESPARSE") or image.read(0, 4) == VMDK_SPARSE_MAGIC:
        capacity = vmdk.check_sparse(image, where)
        if extent.sectors is not None and capacity < extent.sectors:
            raise InvalidImage(
                f"image.path: {where.name()}: the descriptor gives it {extent.sectors} sectors "
                f"but its header holds {capacity}",
                phase="inspect",
            )
    elif extent.kind in ("FLAT", "VMFS") and extent.sectors is not None:
        vmdk.check_flat(image, where, extent.offset, extent.sectors)


def _write_private(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"descriptor-{uuid.uuid4().hex}.vmdk"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def check_free_space(virtual_size: int, output_dir: Path, shown: Path) -> None:
    """Refuse to start a conversion whose output could not fit.

    Raises:
        UnsafeImage: the virtual size exceeds the free space of the output directory.
    """
    free = shutil.disk_usage(output_dir).free
    if virtual_size > free:
        raise UnsafeImage(
            f"image.path: {shown} has a virtual size of {virtual_size} bytes, more than the "
            f"{free} bytes free in {output_dir}; refused before writing anything"
        )
