"""Build initramfs images the way dracut and initramfs-tools lay them out: an optional
uncompressed early-microcode cpio, then the main cpio (newc), compressed or not.

Written here in Python from the cpio ``newc`` format, independently of the agent's reader.
"""

from __future__ import annotations

import gzip
import lzma
import subprocess
from collections.abc import Iterable

VMWARE_MODULES = ("vmw_pvscsi", "mptspi", "mptbase", "vmxnet3", "ahci")
VIRTIO_MODULES = ("virtio_blk", "virtio_scsi", "virtio_pci", "virtio_net", "virtio_ring")
MODULE_DIRS = {
    "virtio_blk": "drivers/block",
    "virtio_scsi": "drivers/scsi",
    "virtio_pci": "drivers/virtio",
    "virtio_ring": "drivers/virtio",
    "virtio_net": "drivers/net",
    "vmw_pvscsi": "drivers/scsi",
    "mptspi": "drivers/message/fusion",
    "mptbase": "drivers/message/fusion",
    "vmxnet3": "drivers/net/vmxnet3",
    "ahci": "drivers/ata",
}


def _member(name: str, data: bytes, mode: int, ino: int) -> bytes:
    encoded = name.encode() + b"\x00"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
    header = b"070701" + b"".join(f"{value:08X}".encode() for value in fields)
    out = header + encoded
    out += b"\x00" * ((4 - len(out) % 4) % 4)
    out += data + b"\x00" * ((4 - len(data) % 4) % 4)
    return out


def cpio_newc(files: dict[str, bytes], directories: Iterable[str] = ()) -> bytes:
    """A newc archive with ``directories`` and ``files`` (name -> content), and a trailer."""
    out = b""
    ino = 1
    for directory in directories:
        out += _member(directory, b"", 0o40755, ino)
        ino += 1
    for name, data in files.items():
        out += _member(name, data, 0o100644, ino)
        ino += 1
    out += _member("TRAILER!!!", b"", 0, 0)
    return out + b"\x00" * ((512 - len(out) % 512) % 512)


def main_archive(kernel: str, modules: Iterable[str], suffix: str = ".ko.xz") -> bytes:
    """The main initramfs archive: an init, and ``modules`` under lib/modules/<kernel>."""
    files = {"init": b"#!/bin/sh\nexec /sbin/init\n", "etc/os-release": b"ID=test\n"}
    directories = ["usr", "usr/lib", "usr/lib/modules", f"usr/lib/modules/{kernel}"]
    for module in modules:
        where = MODULE_DIRS.get(module, "drivers/misc")
        files[f"usr/lib/modules/{kernel}/kernel/{where}/{module}{suffix}"] = b"\x7fELF module"
    return cpio_newc(files, directories)


def early_microcode() -> bytes:
    return cpio_newc(
        {"kernel/x86/microcode/GenuineIntel.bin": b"\x01" * 4096},
        ["kernel", "kernel/x86", "kernel/x86/microcode"],
    )


def compress(data: bytes, kind: str) -> bytes:
    if kind == "none":
        return data
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    if kind == "zstd":  # a program: only where tests may run processes
        return subprocess.run(
            ["zstd", "-q", "-c", "-"], input=data, capture_output=True, check=True, timeout=60
        ).stdout
    raise ValueError(kind)


def initramfs_image(
    kernel: str, modules: Iterable[str], compression: str = "gzip", microcode: bool = False
) -> bytes:
    """An initramfs image as a distribution's tool writes it."""
    image = early_microcode() if microcode else b""
    return image + compress(main_archive(kernel, modules), compression)


def slow_initramfs(kernel: str, ballast_mib: int) -> bytes:
    """A gzip initramfs whose main archive holds ``ballast_mib`` MiB of zeros before its
    modules: a few MiB on disk that take seconds to read (to cancel an inspection while it
    reads). At most 4095 MiB, the largest size a newc header can hold. Made of gzip members
    (one block of zeros repeated), which decode as one stream."""
    encoded = b"ballast\x00"
    fields = [1, 0o100644, 0, 0, 1, 0, ballast_mib << 20, 0, 0, 0, 0, len(encoded), 0]
    header = b"070701" + b"".join(f"{value:08X}".encode() for value in fields) + encoded
    header += b"\x00" * ((4 - len(header) % 4) % 4)
    block = gzip.compress(bytes(16 << 20), compresslevel=1)
    zeros = block * (ballast_mib // 16) + gzip.compress(bytes((ballast_mib % 16) << 20))
    return gzip.compress(header) + zeros + gzip.compress(main_archive(kernel, VIRTIO_MODULES))
