"""The first step every operation shares: read the input image's metadata, safely."""

from __future__ import annotations

from agent.disk import qemu_img
from agent.ops.base import JobContext


async def inspect_input(ctx: JobContext) -> qemu_img.ImageInfo:
    """qemu-img info on the checked input (format from the spec, else probed) + safety checks.

    Raises:
        UnsafeImage: backing file, external data file, unsafe extent, or a probed raw.
        ToolFailed: qemu-img could not read the image.
    """
    requested = ctx.spec.image.format
    fmt = requested.qemu_driver if requested is not None else None
    info = await qemu_img.info(ctx.input_path, fmt)
    qemu_img.check_safe(info, ctx.input_path, ctx.policy)
    return info
