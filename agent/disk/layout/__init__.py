"""Prove an image is whole before qemu-img reads it: walk its own metadata, in Python.

qemu reads a block, grain or cluster that lies past the end of a cut file as zeros, and
``qemu-img convert`` exits 0: a partial export would migrate "successfully" with zeros where
the guest's data was. So for every input format the agent reads the image's tables itself
(one module per format) and refuses, with :class:`~agent.errors.InvalidImage` (never
retried), any table, entry, footer or marker that the file does not hold. The walk reads
metadata only: its cost follows the size of the tables, not of the data.

A raw image has no metadata: only a size given by the job (``image.size_bytes``) can prove
it whole (see :mod:`agent.ops.image`).

VMDK is walked per extent by :mod:`agent.disk.image_safety`, which knows the descriptor and
its extent files (:func:`vmdk.check_sparse`, :func:`vmdk.check_flat`).
"""

from __future__ import annotations

from collections.abc import Callable

from agent.disk.layout import qcow2, vdi, vhd, vhdx, vmdk
from agent.disk.layout.common import ImageBytes, Where

__all__ = ["ImageBytes", "Where", "check_whole", "vmdk"]

_WALKS: dict[str, Callable[[ImageBytes, Where], None]] = {
    "qcow2": qcow2.check,
    "vdi": vdi.check,
    "vpc": vhd.check,
    "vhdx": vhdx.check,
}


def check_whole(fmt: str, image: ImageBytes, where: Where) -> None:
    """Walk the metadata of a single-file image of qemu driver ``fmt`` (not vmdk, not raw:
    nothing to walk).

    Raises:
        InvalidImage: the image is cut short or its metadata is damaged.
        UnsafeImage: a differencing image (its data lives in a parent).
    """
    walk = _WALKS.get(fmt)
    if walk is not None:
        walk(image, where)
