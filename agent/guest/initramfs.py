"""Which drivers an initramfs image carries, read from the image itself.

The image is listed by :mod:`agent.guest.cpio`. A compression Python has no decoder for
(zstd, Debian's default; lz4) is decoded by the node's own program into a scratch file first
(:func:`read_initramfs`): run through :mod:`agent.proc`, so it has a timeout and is killed
with its group when the job is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

from agent import proc
from agent.guest.cpio import CHUNK, MAX_BYTES, CpioError, Listing, list_decompressed, list_initramfs

VIRTIO_DRIVERS = ("virtio_blk", "virtio_scsi", "virtio_pci", "virtio_net")
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
DECODE_TIMEOUT = 600.0
DECODE_MEMORY = 1024**3
DECODER_PROGRAMS = {"zstd": "zstd", "lz4": "lz4", "lzo": "lzop"}

T = TypeVar("T")


def module_name(member: str) -> str | None:
    """``usr/lib/modules/6.1.0/kernel/drivers/block/virtio_blk.ko.zst`` -> ``virtio_blk``."""
    base = PurePosixPath(member).name
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            return base.removesuffix(suffix).replace("-", "_")
    return None


def modules_in(names: Iterable[str]) -> set[str]:
    return {m for m in map(module_name, names) if m}


def builtin_modules(text: str) -> set[str]:
    """Module names listed in a kernel's ``modules.builtin`` (drivers compiled in)."""
    return {m for line in text.splitlines() if (m := module_name(line.strip()))}


@dataclass
class VirtioDrivers:
    """Where each virtio driver comes from at boot: "initramfs", "built-in" or "missing"."""

    drivers: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [d for d, where in self.drivers.items() if where == "missing"]


def virtio_drivers(listing: Listing | None, builtin: set[str]) -> VirtioDrivers:
    """Each virtio driver: compiled into the kernel, else in the initramfs, else missing."""
    present = modules_in(listing.names) if listing else set()
    found = {}
    for driver in VIRTIO_DRIVERS:
        if driver in builtin:
            found[driver] = "built-in"
        elif driver in present:
            found[driver] = "initramfs"
        else:
            found[driver] = "missing"
    return VirtioDrivers(found)


def read_with_python(path: Path) -> Listing:
    """List an image with Python's decoders only (for tests and trees without a program)."""
    with open(path, "rb") as file:
        listing, rest = list_initramfs(file)
    if rest is not None:
        listing.complete = False
        listing.reason = f"{rest[0]} compression: no decoder given"
    return listing


def _copy_tail(source: Path, offset: int, target: Path, stop: threading.Event) -> None:
    with open(source, "rb") as src, open(target, "xb") as dst:
        src.seek(offset)
        while chunk := src.read(CHUNK):
            if stop.is_set():
                raise CpioError("stopped: the job was cancelled")
            dst.write(chunk)


def decoder_argv(kind: str, packed: Path, unpacked: Path) -> list[str]:
    """The command that decodes ``packed`` into ``unpacked`` (each program names them its way)."""
    if kind == "zstd":
        return ["zstd", "-d", "-q", "-f", "--no-progress", "-o", str(unpacked), "--", str(packed)]
    if kind == "lz4":
        return ["lz4", "-d", "-q", "-f", str(packed), str(unpacked)]
    return ["lzop", "-d", "-q", "-f", "-o", str(unpacked), str(packed)]


async def _decode(kind: str, source: Path, offset: int, scratch: Path) -> Path:
    """Decode ``source`` from ``offset`` with the node's program into a scratch file."""
    program = DECODER_PROGRAMS.get(kind, kind)
    if kind not in DECODER_PROGRAMS or proc.which(program) is None:
        raise CpioError(f"{kind} compression: no {program} program on this node")
    packed = scratch / "initramfs.packed"
    unpacked = scratch / "initramfs.cpio"
    await _in_thread(lambda stop: _copy_tail(source, offset, packed, stop))
    try:
        await proc.run(
            decoder_argv(kind, packed, unpacked),
            timeout=DECODE_TIMEOUT,
            memory_limit_bytes=DECODE_MEMORY,
        )
    except proc.CommandFailed as exc:
        raise CpioError(f"{kind} could not decode it: {exc.stderr_tail or exc}") from None
    finally:
        packed.unlink(missing_ok=True)
    if unpacked.stat().st_size > MAX_BYTES:
        raise CpioError(f"decodes to more than {MAX_BYTES} bytes")
    return unpacked


async def _in_thread(work: Callable[[threading.Event], T]) -> T:
    """Run ``work`` in a thread; on cancel, tell it to stop and wait until it has (so nothing
    still reads the guest when its file systems are unmounted)."""
    stop = threading.Event()
    task = asyncio.ensure_future(asyncio.to_thread(work, stop))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Exception):
            await task
        raise


def _list_file(path: Path, stop: threading.Event) -> tuple[Listing, tuple[str, int] | None]:
    with open(path, "rb") as file:
        return list_initramfs(file, stop)


def _list_decoded(path: Path, kind: str, listing: Listing, stop: threading.Event) -> None:
    with open(path, "rb") as file:
        list_decompressed(file, kind, listing, stop)


async def read_initramfs(path: Path, scratch: Path) -> Listing:
    """List the image at ``path`` (a host path inside the mounted guest), decoding what Python
    cannot with the node's program; scratch files are removed on every way out.

    Raises:
        asyncio.CancelledError: the job was cancelled (the decoder is killed first).
    """
    listing, rest = await _in_thread(lambda stop: _list_file(path, stop))
    if rest is None:
        return listing
    kind, offset = rest
    work = scratch / f"initramfs-{os.getpid()}-{id(listing)}"
    work.mkdir(parents=True)
    try:
        unpacked = await _decode(kind, path, offset, work)
        await _in_thread(lambda stop: _list_decoded(unpacked, kind, listing, stop))
    except (CpioError, OSError) as exc:
        listing.complete, listing.reason = False, str(exc)
    finally:
        for leftover in work.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        work.rmdir()
    return listing
