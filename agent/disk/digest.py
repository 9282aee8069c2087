"""sha256 of an output the agent publishes, read back right after it was written.

The file was just written through the page cache, so most of it is still there and the read
costs little I/O (measured in bench/output_digest.py, see BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

CHUNK = 4 * 1024 * 1024


def _sha256_of_fd(fd: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    position = 0
    while block := os.pread(fd, CHUNK, position):
        digest.update(block)
        position += len(block)
    return digest.hexdigest(), position


async def sha256_of_fd(fd: int) -> tuple[str, int]:
    """The hex sha256 of the whole open file and the bytes hashed (in a worker thread)."""
    return await asyncio.to_thread(_sha256_of_fd, fd)


async def sha256_of_path(path: Path) -> str:
    """The hex sha256 of a regular file, opened without following a symlink.

    Raises:
        OSError: it cannot be opened (or is a symlink).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        digest, _ = await sha256_of_fd(fd)
    finally:
        os.close(fd)
    return digest
