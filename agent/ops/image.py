"""The first step every operation shares: check the input image and read its metadata.

The input is pinned (opened, verified, handed to tools as ``/proc/<pid>/fd/<n>``), its header
is checked in Python before any tool opens it (:mod:`agent.disk.image_safety`), and only then
does ``qemu-img info`` run, always with an explicit format.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agent.disk import qemu_img
from agent.disk.image_safety import safe_input
from agent.ops.base import JobContext
from agent.paths import pinned_input


@dataclass(frozen=True)
class CheckedInput:
    """A checked input image: its metadata, and the path tools must be given."""

    info: qemu_img.ImageInfo
    tool_path: Path  # cannot be swapped for another file while the context is open


@contextlib.asynccontextmanager
async def checked_input(ctx: JobContext) -> AsyncIterator[CheckedInput]:
    """Pin and check the input, read its metadata; the pin lasts as long as the context.

    Raises:
        PathNotAllowed: the input was swapped after the path check, or is not a regular file.
        UnsafeImage: unknown format, backing file, external data file, unsafe extent.
        ToolFailed: qemu-img could not read the image.
    """
    requested = ctx.spec.image.format
    fmt = requested.qemu_driver if requested is not None else None
    with (
        pinned_input(ctx.policy, ctx.input_path) as pinned,
        safe_input(ctx.policy, pinned, fmt, ctx.scratch_dir) as source,
    ):
        info = await qemu_img.info(source.tool_path, source.format, shown=ctx.input_path)
        qemu_img.check_safe(info, ctx.input_path, ctx.policy)
        yield CheckedInput(info, source.tool_path)


async def inspect_input(ctx: JobContext) -> qemu_img.ImageInfo:
    """The checked input's metadata (the pin is released on return).

    Raises:
        See :func:`checked_input`.
    """
    async with checked_input(ctx) as source:
        return source.info
