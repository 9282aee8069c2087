"""qemu-img wrappers: read an image's metadata safely, convert with live progress.

Safety rules (an image file is untrusted input):
- the format is always passed with ``-f``; when the job names none we probe under memory and
  CPU limits and refuse a probed ``raw`` (a raw guess can hide a malicious header);
- images that reference other files (backing files, qcow2 external data files, VMDK extents
  outside the allowed input directories) are refused: they would make qemu-img read files the
  path policy never checked.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import proc
from agent.errors import InvalidImage, JobFailure, ToolFailed, UnsafeImage
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
    def from_json(cls, doc: dict[str, Any], image: Path) -> ImageInfo:
        specific = doc.get("format-specific") or {}
        data = specific.get("data") or {}
        extents = [
            str(image.parent / e["filename"])
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


def parse_progress(line: str) -> float | None:
    """The percentage in one qemu-img ``-p`` line ("    (12.34/100%)"), or None."""
    match = _PROGRESS.search(line)
    if match is None:
        return None
    return min(100.0, max(0.0, float(match.group(1))))


async def info(path: Path, fmt: str | None, shown: Path | None = None) -> ImageInfo:
    """``qemu-img info`` under a 1 GiB memory and 30 s CPU limit.

    Args:
        path: a path already checked by the path policy (or its pinned ``/proc`` path).
        fmt: the qemu driver the job named, or None to probe.
        shown: the path to name in messages (default: ``path``).

    Raises:
        UnsafeImage: the probed format is raw (the job must name raw explicitly) or is not
            one the agent supports.
        ToolFailed: qemu-img could not read the image.
    """
    argv = ["qemu-img", "info", "--output=json"]
    if fmt is not None:
        argv += ["-f", fmt]
    argv.append(str(path))
    path = shown or path
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
        raise ToolFailed(f"qemu-img info {path}: {exc}") from exc
    except ValueError as exc:
        raise ToolFailed(f"qemu-img info {path}: output is not JSON: {exc}") from exc
    image = ImageInfo.from_json(doc, Path(argv[-1]))
    if fmt is None:
        if image.format == "raw":
            raise UnsafeImage(
                f"image.format: {path} was probed as raw; name the format in the job "
                '(format: "raw") if it really is a raw image'
            )
        if image.format not in SUPPORTED_DRIVERS:
            raise UnsafeImage(f"image.format: {path} is {image.format!r}, not a supported format")
    return image


def check_safe(image: ImageInfo, path: Path, policy: PathPolicy) -> None:
    """Refuse images that make qemu-img read files other than the checked one.

    Raises:
        UnsafeImage: a backing file, an external data file, or an extent outside the
            allowed input directories.
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
        try:
            policy.check_input(extent, field="image.path extent")
        except JobFailure as exc:
            raise UnsafeImage(f"image.path: {path} references an unsafe extent: {exc}") from exc


def convert_argv(
    src: Path,
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
    src: Path,
    src_fmt: str,
    dst: Path,
    dst_fmt: str,
    *,
    compress: bool,
    progress: ProgressCallback,
    timeout: float,
    compression_type: str | None = None,
) -> None:
    """Convert ``src`` to ``dst``, reporting qemu-img's percentage (never decreasing).

    Raises:
        ToolFailed: qemu-img failed or timed out.
    """
    best = -1.0

    def on_line(line: str) -> None:
        nonlocal best
        percent = parse_progress(line)
        if percent is not None and percent > best:
            best = percent
            progress(percent)

    argv = convert_argv(src, src_fmt, dst, dst_fmt, compress, compression_type)
    try:
        await proc.run(argv, timeout=timeout, on_stdout_line=on_line)
    except proc.CommandError as exc:
        raise ToolFailed(f"qemu-img convert: {exc}") from exc


# qemu-img check's exit statuses (see qemu-img(1)).
CHECK_CORRUPT = 2
CHECK_LEAKS = 3


async def check(path: Path, fmt: str, *, timeout: float, shown: Path | None = None) -> None:
    """``qemu-img check -f <fmt>`` under the memory limit of :func:`info`.

    Args:
        path: a checked path (or the pinned ``/proc`` path of a checked file).
        fmt: the image's qemu driver; never probed.
        shown: the path to name in messages (default: ``path``).

    Raises:
        InvalidImage: the image is corrupt, leaks clusters, or qemu-img cannot open it.
        ToolFailed: qemu-img could not run or timed out.
    """
    argv = ["qemu-img", "check", "-f", fmt, "--output=json", str(path)]
    shown = shown or path
    try:
        await proc.run(argv, timeout=timeout, memory_limit_bytes=INFO_MEMORY_LIMIT)
    except proc.CommandFailed as exc:
        problem = {CHECK_CORRUPT: "is corrupt", CHECK_LEAKS: "leaks clusters"}.get(
            exc.exit_code, "cannot be checked"
        )
        if exc.exit_code == 127:
            raise ToolFailed(f"qemu-img check {shown}: {exc}") from exc
        raise InvalidImage(f"{shown} {problem} ({fmt}): {exc}") from exc
    except proc.CommandError as exc:
        raise ToolFailed(f"qemu-img check {shown}: {exc}") from exc
