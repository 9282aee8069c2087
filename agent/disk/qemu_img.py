"""qemu-img wrappers: read an image's metadata safely, convert with live progress.

Safety rules (an image file is untrusted input):
- the format is always passed with ``-f``; when the job names none we probe under memory and
  CPU limits and refuse a probed ``raw`` (a raw guess can hide a malicious header);
- images that reference other files (backing files, qcow2 external data files, VMDK extents
  outside the allowed input directories) are refused: they would make qemu-img read files the
  path policy never checked.

A source can also be a byte range of a file (a disk stored inside an OVA tar, read in place):
qemu-img is then given a ``json:`` filename whose protocol layer is the ``raw`` driver's
``offset``/``size`` window over the pinned file, and ``-f`` puts the format driver on top::

    qemu-img convert -f vmdk 'json:{"file": {"driver": "raw", "offset": N, "size": M,
        "file": {"driver": "file", "filename": "/proc/<pid>/fd/<n>"}}}' ...
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import proc
from agent.errors import (
    InvalidImage,
    JobFailure,
    OutOfSpace,
    ToolFailed,
    ToolStalled,
    UnsafeImage,
)
from agent.paths import PathPolicy

log = logging.getLogger(__name__)

INFO_MEMORY_LIMIT = 1024**3
INFO_CPU_SECONDS = 30
INFO_TIMEOUT = 60.0
CONVERT_COROUTINES = 8
# qemu block drivers an input may use (v1 formats; "vpc" is qemu's name for vhd).
SUPPORTED_DRIVERS = frozenset({"qcow2", "vmdk", "raw", "vdi", "vpc", "vhdx"})

_PROGRESS = re.compile(r"\(\s*(\d+(?:\.\d+)?)\s*/\s*100%\)")

ProgressCallback = Callable[[float], None]
# What qemu-img is given as an image: a path, or a json: filename (see source_filename).
ToolImage = Path | str


@dataclass(frozen=True)
class ByteRange:
    """The bytes ``[offset, offset + size)`` of a file, which hold the whole image."""

    offset: int
    size: int

    def node(self, path: Path) -> dict[str, Any]:
        """The qemu block node that reads only this range of ``path``."""
        return {
            "driver": "raw",
            "offset": self.offset,
            "size": self.size,
            "file": {"driver": "file", "filename": str(path)},
        }


def source_filename(path: Path, byte_range: ByteRange | None) -> ToolImage:
    """The image argument for qemu-img: ``path`` itself, or a json: filename reading only
    ``byte_range`` of it (the format driver comes from ``-f``, above this node)."""
    if byte_range is None:
        return path
    return "json:" + json.dumps({"file": byte_range.node(path)}, sort_keys=True)


@dataclass(frozen=True)
class ImageInfo:
    """The parts of ``qemu-img info`` the agent uses, plus the whole document."""

    format: str
    virtual_size: int
    actual_size: int | None
    cluster_size: int | None
    dirty_flag: bool | None
    backing_file: str | None
    data_file: str | None
    extents: list[str] = field(default_factory=list)
    format_specific: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict[str, Any], image: ToolImage) -> ImageInfo:
        specific = doc.get("format-specific") or {}
        data = specific.get("data") or {}
        extents = [
            _extent_name(image, str(e["filename"]))
            for e in data.get("extents", [])
            if isinstance(e, dict) and e.get("filename")
        ]
        return cls(
            format=str(doc.get("format", "")),
            virtual_size=int(doc.get("virtual-size", 0)),
            actual_size=doc.get("actual-size"),
            cluster_size=doc.get("cluster-size"),
            dirty_flag=doc.get("dirty-flag"),
            backing_file=doc.get("backing-filename") or doc.get("full-backing-filename"),
            data_file=data.get("data-file"),
            extents=extents,
            format_specific=specific,
            raw=doc,
        )


def _extent_name(image: ToolImage, name: str) -> str:
    # A json: name is a block node (the byte range of a ranged source), not a relative path.
    if name.startswith("json:") or isinstance(image, str):
        return name
    return str(image.parent / name)


# What qemu-img prints when the node, not the image, failed it: another node (or a later
# attempt) may well succeed, so these stay retryable.
_NODE_TROUBLE = re.compile(
    r"No space left|Cannot allocate memory|Input/output error|Stale file handle|"
    r"Transport endpoint|Resource temporarily unavailable|Too many open files|"
    r"Connection (?:reset|refused|timed out)|Disk quota exceeded|Read-only file system",
    re.IGNORECASE,
)
IMAGE_PROBLEM = "an image problem: not retried, fix or replace the source image"
NODE_PROBLEM = "a node problem: retried (on another node if one is free) while retries are left"


def classify_failure(what: str, exc: proc.CommandError) -> JobFailure:
    """The failure of a qemu-img run that reads an image, classed by cause.

    The image (qemu-img exited 1 with its own message: a damaged or unsupported header, a
    truncated table, a missing parent) -> :class:`InvalidImage`, never retried; the node (the
    tool was killed, crashed, could not start or timed out; out of memory, space or file
    handles; an I/O error of the storage) -> :class:`ToolFailed`, retryable. The message says
    which.

    Args:
        what: the command and image, as the message starts ("qemu-img info /in/disk.vmdk").
        exc: what :func:`agent.proc.run` raised.
    """
    if not isinstance(exc, proc.CommandFailed):
        return ToolFailed(f"{what}: {exc} ({NODE_PROBLEM})")
    if exc.exit_code == 1 and not _NODE_TROUBLE.search(exc.stderr_tail):
        return InvalidImage(f"{what}: {exc} ({IMAGE_PROBLEM})", phase="inspect")
    if exc.exit_code < 0 or exc.exit_code > 128:
        signal_number = -exc.exit_code if exc.exit_code < 0 else exc.exit_code - 128
        return ToolFailed(
            f"{what}: qemu-img was killed by signal {signal_number} (crashed or out of "
            f"memory): {exc} ({NODE_PROBLEM})"
        )
    return ToolFailed(f"{what}: {exc} ({NODE_PROBLEM})")


def parse_progress(line: str) -> float | None:
    """The percentage in one qemu-img ``-p`` line ("    (12.34/100%)"), or None."""
    match = _PROGRESS.search(line)
    if match is None:
        return None
    return min(100.0, max(0.0, float(match.group(1))))


async def info(path: ToolImage, fmt: str | None, shown: Path | None = None) -> ImageInfo:
    """``qemu-img info`` under a 1 GiB memory and 30 s CPU limit.

    Args:
        path: a path already checked by the path policy (or its pinned ``/proc`` path), or
            the json: filename of a byte range of one (:func:`source_filename`).
        fmt: the qemu driver the job named, or None to probe.
        shown: the path to name in messages (default: ``path``).

    Raises:
        UnsafeImage: the probed format is raw (the job must name raw explicitly) or is not
            one the agent supports.
        InvalidImage: qemu-img refused the image (see :func:`classify_failure`).
        ToolFailed: qemu-img could not run, crashed or timed out (a node problem).
    """
    argv = ["qemu-img", "info", "--output=json"]
    if fmt is not None:
        argv += ["-f", fmt]
    argv.append(str(path))
    shown_path = shown or path
    try:
        result = await proc.run(
            argv,
            timeout=INFO_TIMEOUT,
            capture_stdout=True,
            memory_limit_bytes=INFO_MEMORY_LIMIT,
            cpu_seconds=INFO_CPU_SECONDS,
        )
        doc = json.loads(result.stdout)
    except proc.CommandError as exc:
        raise classify_failure(f"qemu-img info {shown_path}", exc) from exc
    except ValueError as exc:
        raise ToolFailed(f"qemu-img info {shown_path}: output is not JSON: {exc}") from exc
    image = ImageInfo.from_json(doc, path)
    if fmt is None:
        if image.format == "raw":
            raise UnsafeImage(
                f"image.format: {shown_path} was probed as raw; name the format in the job "
                '(format: "raw") if it really is a raw image'
            )
        if image.format not in SUPPORTED_DRIVERS:
            raise UnsafeImage(
                f"image.format: {shown_path} is {image.format!r}, not a supported format"
            )
    return image


def check_safe(
    image: ImageInfo, path: Path, policy: PathPolicy, own_node: dict[str, Any] | None = None
) -> None:
    """Refuse images that make qemu-img read files other than the checked one.

    Args:
        own_node: for a source that is a byte range, the block node qemu-img was given
            (:meth:`ByteRange.node`): the only extent such an image may have.

    Raises:
        UnsafeImage: a backing file, an external data file, or an extent outside the
            allowed input directories (for a byte range: any extent but the range itself).
    """
    if image.backing_file:
        raise UnsafeImage(
            f"image.path: {path} has a backing file ({image.backing_file}); "
            "images with backing files are refused"
        )
    if image.data_file:
        raise UnsafeImage(
            f"image.path: {path} has an external data file ({image.data_file}); refused"
        )
    for extent in image.extents:
        if own_node is not None:
            if not _is_node(extent, own_node):
                raise UnsafeImage(
                    f"image.path: the image in {path} at parameters.migration.source_offset "
                    f"references another file ({extent}); a disk inside a byte range must be "
                    "a single-file image"
                )
            continue
        try:
            policy.check_input(extent, field="image.path extent")
        except JobFailure as exc:
            raise UnsafeImage(f"image.path: {path} references an unsafe extent: {exc}") from exc


def _is_node(extent: str, node: dict[str, Any]) -> bool:
    if not extent.startswith("json:"):
        return False
    try:
        return bool(json.loads(extent.removeprefix("json:")) == node)
    except ValueError:
        return False


def convert_argv(
    src: ToolImage,
    src_fmt: str,
    dst: Path,
    dst_fmt: str,
    compress: bool,
    compression_type: str | None = None,
) -> list[str]:
    """The qemu-img convert command line.

    Cache modes are left at qemu-img's convert defaults (target ``unsafe``: no flushes during
    the copy; source ``writeback``): the caller fsyncs the finished file before renaming it,
    which is the one durability point we need, and this works on every file system (O_DIRECT
    does not, e.g. tmpfs; measured in bench/convert.py, ``-t none`` is also slower here).

    Args:
        compression_type: qcow2's ``compression_type`` (``zlib`` or ``zstd``) for compressed
            output; None leaves qemu-img's default (zlib). Ignored without ``compress``.
    """
    argv = ["qemu-img", "convert", "-p", "-m", str(CONVERT_COROUTINES)]
    options = ["preallocation=off"]
    if compress:
        # -W (out-of-order writes) lets the coroutines finish in any order, so qemu-img's
        # compression threads overlap: ~1.4x faster with zlib, measured in bench/convert.py.
        # Uncompressed output is I/O bound and gains nothing; without -W it stays laid out in
        # guest order.
        argv += ["-W", "-c"]
        if compression_type is not None:
            options.append(f"compression_type={compression_type}")
    argv += ["-f", src_fmt, "-O", dst_fmt, "-o", ",".join(options), str(src), str(dst)]
    return argv


_COMPRESSION_SUPPORT: dict[str, bool] = {}


async def supports_compression_type(kind: str, scratch_dir: Path) -> bool:
    """Whether this qemu-img can write qcow2 with ``compression_type=kind`` (cached).

    zstd needs qemu >= 5.1 built with libzstd; the only reliable test is creating such an
    image, here a 1 MiB one in the agent's scratch directory, removed again.
    """
    known = _COMPRESSION_SUPPORT.get(kind)
    if known is not None:
        return known
    scratch_dir.mkdir(parents=True, exist_ok=True)
    probe = scratch_dir / f"compression-probe-{uuid.uuid4().hex}.qcow2"
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"compression_type={kind}"]
    try:
        await proc.run([*argv, str(probe), "1M"], timeout=INFO_TIMEOUT)
        supported = True
    except proc.CommandError as exc:
        log.info("qemu-img cannot write qcow2 compression_type=%s error=%s", kind, exc)
        supported = False
    finally:
        probe.unlink(missing_ok=True)
    _COMPRESSION_SUPPORT[kind] = supported
    return supported


async def convert(
    src: ToolImage,
    src_fmt: str,
    dst: Path,
    dst_fmt: str,
    *,
    compress: bool,
    progress: ProgressCallback,
    timeout: float,
    compression_type: str | None = None,
    stall_seconds: float | None = None,
) -> None:
    """Convert ``src`` to ``dst``, reporting qemu-img's percentage (never decreasing).

    Args:
        stall_seconds: kill qemu-img (its whole process group) when its percentage has not
            moved for this long: a source that stopped answering (a hung NFS or FUSE read)
            would otherwise hold the job until its timeout. qemu-img prints a line per 1 %,
            so this must exceed the time one percent of the image takes. None: no watch.

    Raises:
        OutOfSpace: the output file system filled up during the write.
        ToolStalled: no progress for ``stall_seconds``; qemu-img was killed.
        ToolFailed: qemu-img failed or timed out.
    """
    best = -1.0
    moved = time.monotonic()

    def on_line(line: str) -> None:
        nonlocal best, moved
        percent = parse_progress(line)
        if percent is not None and percent > best:
            best = percent
            moved = time.monotonic()
            progress(percent)

    argv = convert_argv(src, src_fmt, dst, dst_fmt, compress, compression_type)
    # qemu-img runs in a task of its own so the watch can stop it; it is awaited only through
    # asyncio.wait, so a cancel of this task reaches it once (a second cancel would cut
    # proc.run's process-group kill short).
    run = asyncio.ensure_future(proc.run(argv, timeout=timeout, on_stdout_line=on_line))
    poll = None if stall_seconds is None else min(1.0, stall_seconds / 4)
    try:
        while not run.done():
            await asyncio.wait({run}, timeout=poll)
            stalled = stall_seconds is not None and time.monotonic() - moved > stall_seconds
            if stalled and not run.done():
                await _stop(run)
                raise ToolStalled(
                    f"qemu-img convert made no progress for {stall_seconds:g} s (stuck at "
                    f"{max(best, 0):.0f}%: the source stopped answering?) and was killed with "
                    "its process group; the node's storage is at fault, the job may be retried"
                )
        run.result()
    except proc.CommandFailed as exc:
        if NO_SPACE in exc.stderr_tail:
            raise OutOfSpace(
                f"qemu-img convert: the output file system ({dst_shown(dst)}) filled up during "
                f"the write ({NO_SPACE}); the partial output was removed"
            ) from exc
        raise ToolFailed(f"qemu-img convert: {exc}") from exc
    except proc.CommandError as exc:
        raise ToolFailed(f"qemu-img convert: {exc}") from exc
    finally:
        await _stop(run)


async def _stop(run: asyncio.Future[proc.CommandResult]) -> None:
    """Cancel a running command once and wait until its process group is gone."""
    if not run.done():
        run.cancel()
        await asyncio.wait({run})
    if not run.cancelled():
        run.exception()  # retrieved: asyncio would otherwise log it as never retrieved


NO_SPACE = "No space left on device"


def dst_shown(dst: Path) -> str:
    """The directory of an output as a user knows it (not a ``/proc`` fd path)."""
    text = str(dst)
    if text.startswith("/proc/"):
        try:
            return str(Path(os.readlink(text)).parent)
        except OSError:
            return "of the output"
    return str(dst.parent)


async def measure(src: ToolImage, src_fmt: str, dst_fmt: str, options: list[str]) -> int:
    """The bytes ``qemu-img measure`` says the output needs, from the source's allocation.

    A 127 GiB dynamic VHD holding 250 KB needs a few hundred KiB, not 127 GiB. The answer
    ignores compression, so for compressed output it is an upper bound.

    Raises:
        ToolFailed: qemu-img could not measure the image.
    """
    argv = ["qemu-img", "measure", "--output=json", "-f", src_fmt, "-O", dst_fmt]
    if options:
        argv += ["-o", ",".join(options)]
    argv.append(str(src))
    try:
        result = await proc.run(
            argv,
            timeout=INFO_TIMEOUT,
            capture_stdout=True,
            memory_limit_bytes=INFO_MEMORY_LIMIT,
            cpu_seconds=INFO_CPU_SECONDS,
        )
        return int(json.loads(result.stdout)["required"])
    except proc.CommandError as exc:
        raise ToolFailed(f"qemu-img measure: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolFailed(f"qemu-img measure: unexpected output: {exc}") from exc


# qemu-img check's exit statuses (see qemu-img(1)).
CHECK_CORRUPT = 2
CHECK_LEAKS = 3


async def check(path: ToolImage, fmt: str, *, timeout: float, shown: Path | None = None) -> None:
    """``qemu-img check -f <fmt>`` under the memory limit of :func:`info`.

    Args:
        path: a checked path (or the pinned ``/proc`` path of a checked file).
        fmt: the image's qemu driver; never probed.
        shown: the path to name in messages (default: ``path``).

    Raises:
        InvalidImage: the image is corrupt, leaks clusters, or qemu-img cannot open it.
        ToolFailed: qemu-img could not run, crashed or timed out (a node problem).
    """
    argv = ["qemu-img", "check", "-f", fmt, "--output=json", str(path)]
    name = shown or path
    try:
        await proc.run(argv, timeout=timeout, memory_limit_bytes=INFO_MEMORY_LIMIT)
    except proc.CommandFailed as exc:
        problem = {CHECK_CORRUPT: "is corrupt", CHECK_LEAKS: "leaks clusters"}.get(exc.exit_code)
        if problem is None:
            raise classify_failure(f"qemu-img check {name}", exc) from exc
        raise InvalidImage(f"{name} {problem} ({fmt}): {exc} ({IMAGE_PROBLEM})") from exc
    except proc.CommandError as exc:
        raise classify_failure(f"qemu-img check {name}", exc) from exc


class ContentMismatch(ToolFailed):
    """qemu-img compare found the output's content differs from the source's."""


async def compare(
    src: ToolImage,
    src_fmt: str,
    dst: Path,
    dst_fmt: str,
    *,
    progress: ProgressCallback,
    timeout: float,
) -> None:
    """``qemu-img compare`` of a source and its output, guest-visible content only.

    Not strict (``-s``): allocation may differ (holes written as zeros are equal), and an
    output larger than the source must be zeros past the source's end.

    Raises:
        ContentMismatch: the contents differ (qemu-img exit status 1; its message says where).
        ToolFailed: qemu-img could not compare them (status 2) or timed out.
    """
    best = -1.0
    said: list[str] = []  # what qemu-img printed besides progress ("Content mismatch at ...")

    def on_line(line: str) -> None:
        nonlocal best
        percent = parse_progress(line)
        if percent is not None and percent > best:
            best = percent
            progress(percent)
        # The verdict follows the last progress mark on the same line (no newline between).
        text = _PROGRESS.sub("", line).strip()
        if text:
            said.append(text)

    argv = ["qemu-img", "compare", "-p", "-f", src_fmt, "-F", dst_fmt, str(src), str(dst)]
    try:
        await proc.run(argv, timeout=timeout, on_stdout_line=on_line)
    except proc.CommandFailed as exc:
        if exc.exit_code == 1:
            where = "; ".join(said[-2:]) or exc.stderr_tail.strip() or "content differs"
            raise ContentMismatch(
                f"qemu-img compare: the output differs from the source: {where}"
            ) from None
        raise ToolFailed(f"qemu-img compare: {exc}") from exc
    except proc.CommandError as exc:
        raise ToolFailed(f"qemu-img compare: {exc}") from exc
