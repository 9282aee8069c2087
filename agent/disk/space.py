"""Will an output fit: the space it needs, from the source's allocation, against free space.

The virtual size says nothing about what a conversion writes: Hyper-V's default disk is a
127 GiB dynamic VHD that may hold a few hundred KiB. ``qemu-img measure`` reads the source's
allocation map and says what the output format needs (for compressed qcow2 an upper bound:
it ignores compression). The check only refuses a job that cannot fit; a disk that fills up
anyway (another writer on the same file system) fails the write with OUT_OF_SPACE.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from agent.disk import qemu_img
from agent.errors import OutOfSpace, ToolFailed

log = logging.getLogger(__name__)


async def required_bytes(
    source: qemu_img.ToolImage, info: qemu_img.ImageInfo, fmt: str, options: list[str]
) -> int:
    """What the output will need; the source's own allocation when qemu-img cannot say."""
    try:
        return await qemu_img.measure(source, info.format, fmt, options)
    except ToolFailed as exc:
        fallback = info.actual_size if info.actual_size is not None else info.virtual_size
        log.warning("qemu-img measure failed; using %d bytes error=%s", fallback, exc)
        return fallback


def check_space(required: int, output_dir: Path, shown: Path) -> None:
    """Refuse a job whose output cannot fit in the output directory's free space.

    Raises:
        OutOfSpace: ``required`` exceeds the free space (retryable: another node's or a later
            moment's output directory may have room).
    """
    free = shutil.disk_usage(output_dir).free
    if required > free:
        raise OutOfSpace(
            f"artifacts.output_path: the output of {shown} needs {required} bytes (qemu-img "
            f"measure of its allocated data), more than the {free} bytes free in {output_dir}; "
            "refused before writing anything",
            phase="inspect",
        )
