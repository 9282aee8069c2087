"""A VM's other disks (``parameters.migration.attach_outputs``), checked and pinned for a repair.

They are outputs this migration already wrote (its data disks, converted), so the repair may
write on them, but only through the path policy: each must already exist under an allowed
output directory, be a regular file reached by its own name (no symlink), and is opened with
``O_NOFOLLOW`` and handed to tools as its pinned ``/proc/<pid>/fd/<n>`` path. Its header is
checked before any tool opens it (a qcow2 with a backing or data file is refused).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.disk.attach import DiskImage
from agent.disk.image_safety import ImageBytes, check_qcow2, sniff_format
from agent.errors import PathNotAllowed, UnsafeImage
from agent.paths import PathPolicy, PinnedFile, pinned_existing_output
from protocol.migration_jobs import AttachedOutput

FIELD = "parameters.migration.attach_outputs"


@dataclass(frozen=True)
class OtherDisk:
    """One checked attach_outputs entry; guest order is list order (after the job's disk)."""

    disk_id: str
    path: Path  # resolved
    format: str
    field: str


def check_other_disks(
    policy: PathPolicy, outputs: Sequence[AttachedOutput], own: Sequence[Path]
) -> list[OtherDisk]:
    """Check every entry's path before anything is converted or attached.

    Args:
        own: the files the job itself reads or writes; none may be attached a second time.

    Raises:
        PathNotAllowed: a path outside the allowed output directories, missing, a symlink,
            not a regular file, or a file already attached.
    """
    seen: dict[Path | tuple[int, int], str] = {}
    for path in own:
        seen[Path(os.path.realpath(path))] = "the job's own image"
        with contextlib.suppress(OSError):
            st = os.stat(path)
            seen[(st.st_dev, st.st_ino)] = "the job's own image"
    disks = []
    for index, entry in enumerate(outputs):
        field = f"{FIELD}[{index}].path"
        resolved = policy.check_existing_output(entry.path, field)
        st = os.stat(resolved)
        for key in (resolved, (st.st_dev, st.st_ino)):
            if key in seen:
                raise PathNotAllowed(f"{field}: {entry.path} is {seen[key]} already; refused")
        what = f"attached as disk {entry.disk_id!r}"
        seen[resolved] = seen[(st.st_dev, st.st_ino)] = what
        disks.append(OtherDisk(entry.disk_id, resolved, entry.format.value, field))
    return disks


def _check_header(pinned: PinnedFile, disk: OtherDisk) -> None:
    found = sniff_format(pinned.fd, pinned.st.st_size)
    if disk.format == "qcow2":
        if found != "qcow2":
            raise UnsafeImage(f"{disk.field}: {disk.path} is not a qcow2 image")
        check_qcow2(ImageBytes(pinned.fd, pinned.st.st_size), pinned.path)
    elif found is not None:
        raise UnsafeImage(f"{disk.field}: {disk.path} is said to be raw but is a {found} image")


@contextlib.contextmanager
def pinned_other_disks(
    policy: PathPolicy, disks: Sequence[OtherDisk], *, writable: bool
) -> Iterator[list[DiskImage]]:
    """Pin each disk for the body and describe it for :func:`agent.disk.attach.attached_disks`
    (indexes 1, 2…: the job's own disk is 0).

    Raises:
        PathNotAllowed: a path changed since it was checked, or two entries are one file.
        UnsafeImage: the header does not match the format, or a qcow2 refers to other files.
    """
    with contextlib.ExitStack() as stack:
        images = []
        inodes: set[tuple[int, int]] = set()
        for index, disk in enumerate(disks, 1):
            pinned = stack.enter_context(
                pinned_existing_output(policy, disk.path, disk.field, writable=writable)
            )
            inode = (pinned.st.st_dev, pinned.st.st_ino)
            if inode in inodes:
                raise PathNotAllowed(f"{disk.field}: {disk.path} is attached twice; refused")
            inodes.add(inode)
            _check_header(pinned, disk)
            images.append(
                DiskImage(
                    pinned.tool_path,
                    disk.format,
                    writable,
                    index=index,
                    disk_id=disk.disk_id,
                    shown=pinned.path,
                )
            )
        yield images
