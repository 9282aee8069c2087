"""Checking an input against the checksum its job gives (``image.checksum``, sha256)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from pathlib import Path

from agent.errors import InvalidImage

CHUNK = 4 * 1024 * 1024


def _sha256(fd: int, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    position, end = offset, offset + size
    while position < end:
        block = os.pread(fd, min(CHUNK, end - position), position)
        if not block:
            break  # the file ended early: the digest will not match
        digest.update(block)
        position += len(block)
    return digest.hexdigest()


async def verify_sha256(fd: int, offset: int, size: int, expected: str, shown: Path) -> None:
    """Hash ``size`` bytes of the open file from ``offset``; refuse a mismatch.

    Raises:
        InvalidImage: naming the field, both digests and the bytes hashed.
    """
    want = expected.removeprefix("sha256:")
    got = await asyncio.to_thread(_sha256, fd, offset, size)
    if not hmac.compare_digest(got, want):
        where = f"bytes {offset}-{offset + size} of {shown}" if offset else str(shown)
        raise InvalidImage(
            f"image.checksum: sha256 of {where} is {got}, the job expects {want}: the file is "
            "not the one that was exported (cut short or changed); export it again",
            phase="validate",
        )
