"""A small file system of its own for a test: an ext4 image file, loop-mounted."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def small_filesystem(image: Path, mountpoint: Path, mib: int) -> Iterator[Path]:
    """Make a ``mib`` MiB ext4 file system in ``image`` and mount it (loop) at ``mountpoint``.

    No blocks are reserved for root (the agent is root: it could write into them, so the free
    space it measures would not be the space it has). Unmounted on the way out.
    """
    with open(image, "wb") as f:
        f.truncate(mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, timeout=60)
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True, timeout=60)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False, timeout=60)
        image.unlink(missing_ok=True)


def fill(directory: Path, keep_bytes: int = 0) -> Path:
    """Take all but about ``keep_bytes`` of the free space of ``directory``'s file system."""
    filler = directory / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    size = 0
    try:
        # Halves: one allocation of everything fails for want of room for its own extents.
        while (free := shutil.disk_usage(directory).free - keep_bytes) > 4096:
            chunk = max(free // 2, 4096)
            try:
                os.posix_fallocate(fd, size, chunk)
            except OSError:
                break
            size += chunk
    finally:
        os.close(fd)
    return filler
