"""``parameters.migration`` of a disk job, as the agent re-validates it (it trusts nobody).

A VM migration's disk jobs (``convert``, and the repair operations for the boot disk) carry
:class:`~protocol.migration_jobs.DiskJobParameters`: the output's file name, the byte range of
``image.path`` that holds the disk (a disk inside an OVA), and whether to compare the output
with the source. ``inspect`` is never part of a migration and refuses the object.
"""

from __future__ import annotations

from agent.disk.qemu_img import ByteRange
from agent.errors import InvalidSpec
from agent.ops.base import JobContext
from protocol.errors import InvalidArgument
from protocol.migration_jobs import DiskJobParameters, disk_job_parameters
from protocol.spec import Operation

FIELD = "parameters.migration"


def migration_parameters(ctx: JobContext) -> DiskJobParameters | None:
    """The job's ``parameters.migration``, checked for its operation (None when absent).

    Raises:
        InvalidSpec: the object is malformed, or asks for what this operation cannot do
            (any of it for inspect; attach_outputs for convert; verify_content for a repair).
    """
    try:
        parameters = disk_job_parameters(ctx.spec)
    except InvalidArgument as exc:
        raise InvalidSpec(exc.message, phase="validate") from None
    if parameters is None:
        return None
    operation = ctx.spec.operation
    if operation is Operation.INSPECT:
        raise InvalidSpec(
            f"{FIELD}: inspect is not a disk job of a migration; remove {FIELD}",
            phase="validate",
        )
    if operation is Operation.CONVERT and parameters.attach_outputs:
        raise InvalidSpec(
            f"{FIELD}.attach_outputs: only a repair attaches other disks; a convert must "
            "leave it empty",
            phase="validate",
        )
    if operation is not Operation.CONVERT and parameters.verify_content:
        raise InvalidSpec(
            f"{FIELD}.verify_content: a repair changes the guest, so its output differs from "
            "the source by design; only a convert can be verified",
            phase="validate",
        )
    if operation is not Operation.CONVERT and has_byte_range(parameters):
        _check_repair_reads_a_copy(ctx)
    return parameters


def _check_repair_reads_a_copy(ctx: JobContext) -> None:
    # dry_run and in_place attach image.path itself, which would be the whole OVA.
    for option in ("dry_run", "in_place"):
        if ctx.spec.parameters.get(option) is True:
            raise InvalidSpec(
                f"parameters.{option}: cannot be used with {FIELD}.source_offset/source_size "
                "(a disk inside a larger file is repaired on a converted copy only)",
                phase="validate",
            )


def has_byte_range(parameters: DiskJobParameters | None) -> bool:
    """Whether the job reads a part of image.path rather than the whole file."""
    return parameters is not None and (
        parameters.source_offset > 0 or parameters.source_size is not None
    )


def source_range(parameters: DiskJobParameters | None, file_size: int) -> ByteRange | None:
    """The byte range of image.path that holds the disk, or None for the whole file.

    Args:
        parameters: the job's checked migration parameters.
        file_size: the size of image.path (as pinned).

    Raises:
        InvalidSpec: the range does not lie inside the file, or is empty.
    """
    if parameters is None or not has_byte_range(parameters):
        return None
    offset = parameters.source_offset
    if offset >= file_size:
        raise InvalidSpec(
            f"{FIELD}.source_offset: {offset} is at or beyond the end of image.path "
            f"({file_size} bytes)",
            phase="inspect",
        )
    size = parameters.source_size if parameters.source_size is not None else file_size - offset
    if offset + size > file_size:
        raise InvalidSpec(
            f"{FIELD}.source_size: source_offset {offset} + source_size {size} = "
            f"{offset + size} is beyond the end of image.path ({file_size} bytes)",
            phase="inspect",
        )
    return ByteRange(offset, size)
