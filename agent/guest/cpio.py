"""List the members of an initramfs: cpio archives, one after another, possibly compressed.

The kernel unpacks an initramfs as a sequence of cpio archives (``newc``, ``crc`` or ``odc``),
zero-padded between them; any of them may be compressed. Distributions prepend an uncompressed
archive with CPU microcode to the compressed main one. This module reads that layout without
extracting anything: uncompressed archives in place, the rest through a decompressor (gzip,
xz, lzma and bzip2 here; zstd and lz4 need a program, see :mod:`agent.guest.initramfs`).

Everything is bounded (members, decompressed bytes, name length): the file comes from the
guest and is untrusted.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

NEWC_MAGICS = (b"070701", b"070702")
ODC_MAGIC = b"070707"
TRAILER = "TRAILER!!!"
NEWC_HEADER = 110
ODC_HEADER = 76
MAX_NAME = 4096
MAX_MEMBERS = 500_000
MAX_BYTES = 8 * 1024**3  # decompressed bytes read from one image
CHUNK = 1024 * 1024

# Leading bytes of each compression the kernel can unpack.
MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"BZh", "bzip2"),
    (b"\x89LZO", "lzo"),
    (b"\x5d\x00\x00", "lzma"),
)


def _decoder(kind: str, raw: BinaryIO) -> BinaryIO | None:
    """A reader of ``raw`` decompressed, for the compressions Python decodes; else None."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if kind in ("xz", "lzma"):
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    return None


class CpioError(Exception):
    """The bytes are not a cpio archive the kernel would unpack (or pass a limit)."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass
class Listing:
    """What an initramfs holds: member names (no leading ``./``), and how it was packed."""

    names: list[str] = field(default_factory=list)
    # "cpio" for uncompressed archives at the start, then the compression of the rest.
    layers: list[str] = field(default_factory=list)
    complete: bool = True
    reason: str = ""  # why it is not complete


class _Stream:
    """A byte stream with look-ahead and a count of bytes consumed (bounded)."""

    def __init__(
        self, source: Readable, limit: int = MAX_BYTES, stop: threading.Event | None = None
    ) -> None:
        self._source = source
        self._buffer = b""
        self.consumed = 0
        self._limit = limit
        self._stop = stop

    def peek(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if self._stop is not None and self._stop.is_set():
                raise CpioError("stopped: the job was cancelled")
            more = self._source.read(max(CHUNK, size - len(self._buffer)))
            if not more:
                break
            self._buffer += more
        return self._buffer[:size]

    def read(self, size: int) -> bytes:
        data = self.peek(size)
        self._buffer = self._buffer[len(data) :]
        self.consumed += len(data)
        if self.consumed > self._limit:
            raise CpioError(f"more than {self._limit} bytes")
        return data

    def read_exact(self, size: int) -> bytes:
        data = self.read(size)
        if len(data) != size:
            raise CpioError("the archive ends in the middle of a member")
        return data

    def skip(self, size: int) -> None:
        while size > 0:
            step = min(size, CHUNK)
            if len(self.read(step)) != step:
                raise CpioError("the archive ends in the middle of a member")
            size -= step

    def skip_zeros(self) -> None:
        """Skip the zero padding the kernel allows between archives."""
        while True:
            head = self.peek(CHUNK)
            stripped = head.lstrip(b"\x00")
            self.read(len(head) - len(stripped))
            if stripped or not head:
                return


def _pad(length: int) -> int:
    return (4 - length % 4) % 4


def _hex_fields(header: bytes) -> list[int]:
    try:
        return [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
    except ValueError:
        raise CpioError("a newc header with a field that is not hexadecimal") from None


def _octal(value: bytes) -> int:
    try:
        return int(value, 8)
    except ValueError:
        raise CpioError("an odc header with a field that is not octal") from None


def _members(stream: _Stream) -> Iterator[str]:
    """Names of one archive's members, up to and without its trailer."""
    while True:
        magic = stream.peek(6)
        if magic in NEWC_MAGICS:
            fields = _hex_fields(stream.read_exact(NEWC_HEADER))
            size, name_size = fields[6], fields[11]
            name_pad, data_pad = _pad(NEWC_HEADER + name_size), _pad(size)
        elif magic == ODC_MAGIC:
            header = stream.read_exact(ODC_HEADER)
            name_size, size = _octal(header[59:65]), _octal(header[65:76])
            name_pad = data_pad = 0
        else:
            raise CpioError(f"no cpio header at byte {stream.consumed} (found {magic!r})")
        if not 0 < name_size <= MAX_NAME:
            raise CpioError(f"a member name of {name_size} bytes")
        name = stream.read_exact(name_size).rstrip(b"\x00").decode("utf-8", "surrogateescape")
        stream.skip(name_pad)
        if name == TRAILER:
            return
        stream.skip(size + data_pad)
        yield name.removeprefix("./").lstrip("/")


def compression_of(head: bytes) -> str | None:
    """The compression whose magic ``head`` starts with, or None."""
    return next((kind for magic, kind in MAGICS if head.startswith(magic)), None)


def _list_archives(stream: _Stream, listing: Listing) -> str | None:
    """Read consecutive uncompressed archives; return the compression that follows, if any."""
    while True:
        stream.skip_zeros()
        head = stream.peek(8)
        if not head:
            return None
        if head[:6] in (*NEWC_MAGICS, ODC_MAGIC):
            if not listing.layers:  # uncompressed archives come first, or not at all
                listing.layers.append("cpio")
            for name in _members(stream):
                listing.names.append(name)
                if len(listing.names) > MAX_MEMBERS:
                    raise CpioError(f"more than {MAX_MEMBERS} members")
            continue
        kind = compression_of(head)
        if kind is None:
            raise CpioError(f"neither cpio nor a known compression at byte {stream.consumed}")
        return kind


def list_stream(
    source: Readable, listing: Listing, stop: threading.Event | None = None
) -> tuple[str, int] | None:
    """List the uncompressed archives at the start of ``source`` into ``listing``.

    Returns:
        None when the stream ends there; else the compression of what follows and the
        offset (in ``source``) where it starts.

    Raises:
        CpioError: malformed or past a limit.
    """
    stream = _Stream(source, stop=stop)
    kind = _list_archives(stream, listing)
    return None if kind is None else (kind, stream.consumed)


def list_decompressed(
    source: Readable, kind: str, listing: Listing, stop: threading.Event | None = None
) -> None:
    """List the archives in an already decompressed stream (``kind`` names its compression).

    Raises:
        CpioError: malformed, compressed twice, or past a limit.
    """
    listing.layers.append(kind)
    inner = list_stream(source, listing, stop)
    if inner is not None:
        # The kernel would try to decompress again; dracut and initramfs-tools never do this.
        raise CpioError(f"{inner[0]} data inside the {kind} stream")


def list_initramfs(
    file: BinaryIO, stop: threading.Event | None = None
) -> tuple[Listing, tuple[str, int] | None]:
    """List an initramfs with the decoders Python has (``stop`` set: give up soon).

    Returns:
        The listing, and (compression, offset) of a compressed part Python cannot decode
        (zstd, lz4, lzo), for the caller to decode with a program; None when all was read.
    """
    listing = Listing()
    try:
        found = list_stream(file, listing, stop)
        if found is None:
            return listing, None
        kind, offset = found
        file.seek(offset)
        decoded = _decoder(kind, file)
        if decoded is None:
            return listing, found
        with decoded:
            list_decompressed(decoded, kind, listing, stop)
    except (CpioError, OSError, EOFError, lzma.LZMAError) as exc:
        listing.complete, listing.reason = False, str(exc) or type(exc).__name__
    return listing, None
