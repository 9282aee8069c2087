"""A throwaway qcow2 overlay over a read-only source: repairs write into it, never the source.

The overlay lives in the agent's scratch space and names its backing in its header: the
pinned source (``/proc/<pid>/fd/<n>``) or, for a disk inside a larger file, the ``json:``
filename of that byte range (:func:`agent.disk.qemu_img.source_filename`), with the source's
format. qemu opens a backing read-only, so whatever is written through the overlay (a repair,
a discard that turns freed clusters into zero clusters) stays in the overlay. The overlay is
readable only while the pin is open: keep the source pinned for as long as it is used.

Each overlay is journaled (:mod:`agent.disk.journal`) before it is created, so a restarted
agent removes a crashed job's overlay (:mod:`agent.disk.leftovers`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent import proc
from agent.disk.journal import AttachmentJournal, Record
from agent.disk.qemu_img import INFO_MEMORY_LIMIT, INFO_TIMEOUT, ToolImage
from agent.errors import ToolFailed

log = logging.getLogger(__name__)

OVERLAY_NAME = "overlay.qcow2"
KIND = "overlay"
MAP_TIMEOUT = 600.0
# The overlay's cluster: qemu's qcow2 layer works per cluster where the copy reads through to
# the backing, so 64 KiB (qemu's default) cost the one copy pass ~0.1 s of CPU per GiB more
# than reading the source directly; it is also the trim's granularity (a discard smaller
# than a cluster frees nothing). bench/repair_overlay.py: OVERLAY_CLUSTER.
OVERLAY_CLUSTER = 128 * 1024


@dataclass(frozen=True)
class Overlay:
    """An overlay file and the source it reads through to."""

    path: Path
    backing: ToolImage
    backing_format: str
    virtual_size: int


def create_argv(overlay: Path, backing: ToolImage, backing_format: str, size: int) -> list[str]:
    """``qemu-img create`` of a qcow2 overlay whose backing is ``backing`` (format given)."""
    return [
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        backing_format,
        "-o",
        f"cluster_size={OVERLAY_CLUSTER}",
        "-b",
        str(backing),
        str(overlay),
        str(size),
    ]


@contextlib.contextmanager
def _journaled(journal: AttachmentJournal, path: Path) -> Iterator[None]:
    record = journal.add({"kind": KIND, "path": str(path)})
    try:
        yield
    finally:
        remove_overlay(path)
        journal.remove(record)


@contextlib.asynccontextmanager
async def overlay_over(
    backing: ToolImage,
    backing_format: str,
    virtual_size: int,
    workdir: Path,
    journal: AttachmentJournal,
) -> AsyncIterator[Overlay]:
    """Create ``workdir/overlay.qcow2`` over ``backing`` for the body; removed on every way out.

    Yields:
        The :class:`Overlay`.

    Raises:
        ToolFailed: qemu-img could not create the overlay (or open the backing).
    """
    path = workdir / OVERLAY_NAME
    with _journaled(journal, path):
        path.unlink(missing_ok=True)  # a stale one of an earlier attempt of this job
        argv = create_argv(path, backing, backing_format, virtual_size)
        try:
            await proc.run(argv, timeout=INFO_TIMEOUT, memory_limit_bytes=INFO_MEMORY_LIMIT)
        except proc.CommandError as exc:
            raise ToolFailed(f"qemu-img create (overlay over the source): {exc}") from exc
        log.info("overlay created path=%s format=%s", path, backing_format)
        yield Overlay(path, backing, backing_format, virtual_size)


def remove_overlay(path: Path) -> None:
    """Remove an overlay file (blocking); only a file named like one of ours, never a link.

    Its work directory goes too when it is empty (``rmdir``, never a recursive delete).
    """
    if path.name != OVERLAY_NAME:
        log.warning("refusing to remove a file not named as an overlay path=%s", path)
        return
    with contextlib.suppress(FileNotFoundError):
        if not path.is_symlink() and not path.is_file():
            log.warning("overlay path is not a regular file; left path=%s", path)
            return
        path.unlink()
    with contextlib.suppress(OSError):
        os.rmdir(path.parent / "root")
    with contextlib.suppress(OSError):
        os.rmdir(path.parent)


def release_record(record: Record) -> None:
    """Release a journaled overlay after a crash (see :mod:`agent.disk.leftovers`)."""
    remove_overlay(Path(record["path"]))


@dataclass(frozen=True)
class Extent:
    start: int
    length: int


async def _map(image: ToolImage, fmt: str | None, timeout: float) -> list[dict[str, object]]:
    argv = ["qemu-img", "map", "--output=json", *(["-f", fmt] if fmt else []), str(image)]
    try:
        result = await proc.run(
            argv, timeout=timeout, capture_stdout=True, memory_limit_bytes=INFO_MEMORY_LIMIT
        )
        entries = json.loads(result.stdout)
    except proc.CommandError as exc:
        raise ToolFailed(f"qemu-img map: {exc}") from exc
    except ValueError as exc:
        raise ToolFailed(f"qemu-img map: output is not JSON: {exc}") from exc
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _extents(entries: Sequence[dict[str, object]], key: str) -> list[Extent]:
    found = []
    for e in entries:
        if e.get(key) and not (key == "data" and e.get("zero")):
            found.append(Extent(int(e["start"]), int(e["length"])))  # type: ignore[call-overload]
    return found


async def data_extents(image: ToolImage, fmt: str, *, timeout: float = MAP_TIMEOUT) -> list[Extent]:
    """The guest ranges of ``image`` that hold data (``qemu-img map``: neither a hole nor a
    zero cluster), through its backing chain.

    Raises:
        ToolFailed: qemu-img could not map the image.
    """
    return _extents(await _map(image, fmt, timeout), "data")


def without_backing(path: Path) -> str:
    """A ``json:`` filename opening the qcow2 file ``path`` with its backing left out: what
    the file itself covers reads as "present", the rest as absent."""
    node = {"driver": "qcow2", "file": {"driver": "file", "filename": str(path)}, "backing": None}
    return "json:" + json.dumps(node)


async def kept_extents(
    overlay: Overlay, backing_data: Sequence[Extent], *, timeout: float = MAP_TIMEOUT
) -> list[Extent]:
    """The data extents of ``overlay`` through its backing, given the backing's own
    (``backing_data``, mapped once already): the backing's data where the overlay covers
    nothing, plus the overlay's own data clusters.

    Mapping the overlay through its backing asks the backing about every cluster the overlay
    does not hold (a few hundred ms for a 1 GiB VMDK); the overlay alone is a few ms. The
    result is the same: a zero cluster of the overlay (what a trim leaves) hides the backing's
    data beneath it. A qemu-img too old to say which ranges an image covers ("present") gets
    the full map instead.

    Raises:
        ToolFailed: qemu-img could not map the overlay.
    """
    entries = await _map(without_backing(overlay.path), None, timeout)
    if any("present" not in e for e in entries):
        return await data_extents(overlay.path, "qcow2", timeout=timeout)
    covered = _extents(entries, "present")
    return merged([*subtract(backing_data, covered), *_extents(entries, "data")])


def subtract(extents: Sequence[Extent], holes: Sequence[Extent]) -> list[Extent]:
    """The parts of ``extents`` outside every extent of ``holes`` (both in any order)."""
    cuts = merged(holes)
    out: list[Extent] = []
    first = 0  # the first cut that ends after the current extent starts
    for e in merged(extents):
        start, end = e.start, e.start + e.length
        while first < len(cuts) and cuts[first].start + cuts[first].length <= start:
            first += 1
        i = first
        while i < len(cuts) and cuts[i].start < end:
            if cuts[i].start > start:
                out.append(Extent(start, cuts[i].start - start))
            start = max(start, cuts[i].start + cuts[i].length)
            i += 1
        if start < end:
            out.append(Extent(start, end - start))
    return out


def merged(extents: Sequence[Extent]) -> list[Extent]:
    """``extents`` sorted, with overlapping and touching ones joined."""
    out: list[Extent] = []
    for e in sorted(extents, key=lambda x: x.start):
        if out and e.start <= out[-1].start + out[-1].length:
            last = out[-1]
            end = max(last.start + last.length, e.start + e.length)
            out[-1] = Extent(last.start, end - last.start)
        else:
            out.append(e)
    return out


def bytes_within(extents: Sequence[Extent], offset: int, size: int) -> int:
    """How many bytes of ``extents`` lie in ``[offset, offset + size)``."""
    end = offset + size
    return sum(max(0, min(end, e.start + e.length) - max(offset, e.start)) for e in extents)
