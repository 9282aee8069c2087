"""The first step every operation shares: check the input image and read its metadata.

The input is pinned (opened, verified, handed to tools as ``/proc/<pid>/fd/<n>``), its header
is checked in Python before any tool opens it (:mod:`agent.disk.image_safety`), and only then
does ``qemu-img info`` run, always with an explicit format.

A migration's disk job may name a byte range of the file as the image
(``parameters.migration.source_offset`` / ``source_size``: a disk inside an OVA, read in
place); the header checks and qemu-img then see only that range.

Before qemu-img opens anything, the source is proved whole (:mod:`agent.disk.layout`): every
table of the format and every entry in them lies inside the file (or the range). A raw image
has no tables: ``image.size_bytes`` (for a migration, the manifest's per-disk ``bytes``) is
the only proof, and without it :attr:`CheckedInput.size_check` says the size was not verified.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from agent.disk import qemu_img
from agent.disk.checksum import verify_sha256
from agent.disk.image_safety import safe_input
from agent.errors import InvalidImage
from agent.ops.base import JobContext
from agent.ops.disk_job import migration_parameters, source_range
from agent.paths import pinned_input


@dataclass(frozen=True)
class CheckedInput:
    """A checked input image: its metadata, and the path tools must be given."""

    info: qemu_img.ImageInfo
    # Cannot be swapped for another file while the context is open; for a byte range, the
    # json: filename of that range of the pinned file (qemu-img only).
    tool_path: qemu_img.ToolImage
    byte_range: qemu_img.ByteRange | None = None
    # How the source was proved whole: "metadata" (its format's tables all lie inside the
    # file), "size_bytes" (raw, the file's size is image.size_bytes) or "not verified" (raw,
    # no size given: a cut raw file cannot be told from a whole one).
    size_check: str = "metadata"


# The metadata walk (safe_input) already refuses a VMDK cut short; qemu-img check is kept as
# the second opinion of the reader that will convert it (qemu's own grain-table reading, for
# VMDK variants of other producers), for tens of ms (bench/source_check.py).
CHECKED_SOURCE_FORMATS = frozenset({"vmdk"})


# Read-only work on the source that may start once its metadata is known to be safe (the
# convert's qemu-img measure): run alongside qemu-img check instead of after it.
AlongsideCheck = Callable[[CheckedInput], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def checked_input(
    ctx: JobContext, alongside_check: AlongsideCheck | None = None
) -> AsyncIterator[CheckedInput]:
    """Pin and check the input, read its metadata; the pin lasts as long as the context.

    ``alongside_check`` runs concurrently with ``qemu-img check`` (after ``qemu-img info``
    and its safety checks passed); the context is entered only when both ended, and when
    the check fails it is cancelled and the check's error is raised.

    Raises:
        InvalidSpec: ``parameters.migration`` is invalid for this operation, or its byte range
            does not lie inside the file.
        PathNotAllowed: the input was swapped after the path check, or is not a regular file.
        UnsafeImage: unknown format, backing file, external data file, unsafe extent.
        InvalidImage: the bytes do not match ``image.checksum``, or a VMDK whose check fails
            (cut short, say).
        InvalidImage: also the source is cut short (a table or entry past its end), its
            size is not ``image.size_bytes``, or qemu-img refused it (an image problem).
        ToolFailed: qemu-img could not run, crashed or timed out (a node problem).
    """
    migration = migration_parameters(ctx)
    requested = ctx.spec.image.format
    fmt = requested.qemu_driver if requested is not None else None
    with pinned_input(ctx.policy, ctx.input_path) as pinned:
        byte_range = source_range(migration, pinned.st.st_size)
        size = byte_range.size if byte_range else pinned.st.st_size
        _check_size_bytes(ctx, size, byte_range)
        checksum = ctx.spec.image.checksum
        if checksum is not None:
            offset = byte_range.offset if byte_range else 0
            await verify_sha256(pinned.fd, offset, size, checksum, ctx.input_path)
        with safe_input(ctx.policy, pinned, fmt, ctx.scratch_dir, byte_range) as source:
            info = await qemu_img.info(source.tool_path, source.format, shown=ctx.input_path)
            qemu_img.check_safe(info, ctx.input_path, ctx.policy, source.range_node)
            checked = CheckedInput(info, source.tool_path, byte_range)
            if info.format in CHECKED_SOURCE_FORMATS:
                await _check_alongside(ctx, checked, alongside_check)
            elif alongside_check is not None:
                await alongside_check(checked)
            size_check = "metadata"
            if info.format == "raw":
                size_check = "not verified"
                if ctx.spec.image.size_bytes is not None:
                    size_check = "size_bytes"
                else:
                    ctx.progress.report(
                        "inspect",
                        0,
                        force=True,
                        message=(
                            "the size of the raw image was not verified: a raw file has no "
                            "metadata to prove it whole; give image.size_bytes to check it"
                        ),
                    )
            yield CheckedInput(info, source.tool_path, byte_range, size_check)


async def _check_alongside(
    ctx: JobContext, source: CheckedInput, alongside_check: AlongsideCheck | None
) -> None:
    """qemu-img check of the source, with ``alongside_check`` running meanwhile."""
    other = asyncio.create_task(alongside_check(source)) if alongside_check else None
    try:
        await qemu_img.check(
            source.tool_path,
            source.info.format,
            timeout=qemu_img.INFO_TIMEOUT,
            shown=ctx.input_path,
        )
    except BaseException:
        if other is not None:
            other.cancel()  # its tool's process group is killed (agent.proc)
            with contextlib.suppress(BaseException):
                await other
        raise
    if other is not None:
        await other


def _check_size_bytes(ctx: JobContext, size: int, byte_range: qemu_img.ByteRange | None) -> None:
    place = (
        f"the disk at parameters.migration.source_offset {byte_range.offset} of {ctx.input_path}"
        if byte_range is not None
        else str(ctx.input_path)
    )
    check_size_bytes(ctx.spec.image.size_bytes, size, place)


def check_size_bytes(expected: int | None, size: int, place: str) -> None:
    """Refuse an image of ``size`` bytes when the job says ``expected`` (None: unchecked).

    Raises:
        InvalidImage: the sizes differ, naming image.size_bytes.
    """
    if expected is None or expected == size:
        return
    shortfall = "shorter: the file looks truncated" if size < expected else "longer"
    raise InvalidImage(
        f"image.size_bytes: {place} is {size} bytes, not the {expected} bytes the job "
        f"gives; it is {shortfall} (copy the source again, or correct image.size_bytes)",
        phase="inspect",
    )


async def inspect_input(ctx: JobContext) -> qemu_img.ImageInfo:
    """The checked input's metadata (the pin is released on return).

    Raises:
        See :func:`checked_input`.
    """
    async with checked_input(ctx) as source:
        return source.info


def unpinned_source(ctx: JobContext) -> qemu_img.ToolImage:
    """The checked input path as qemu-img is given it outside :func:`checked_input` (after
    it): the path, or the json: filename of its ``parameters.migration`` byte range.

    Raises:
        InvalidSpec: see :func:`checked_input`.
    """
    byte_range = source_range(migration_parameters(ctx), ctx.input_path.stat().st_size)
    return qemu_img.source_filename(ctx.input_path, byte_range)
