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
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import proc
from agent.errors import JobFailure, ToolFailed, UnsafeImage
from agent.paths import PathPolicy

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


def convert_argv(src: Path, src_fmt: str, dst: Path, dst_fmt: str, compress: bool) -> list[str]:
    """The qemu-img convert command line.

    Cache modes are left at qemu-img's convert defaults (target ``unsafe``: no flushes during
    the copy; source ``writeback``): the caller fsyncs the finished file before renaming it,
    which is the one durability point we need, and this works on every file system (O_DIRECT
    does not, e.g. tmpfs).
    """
    # -W (out-of-order writes) lets the coroutines finish in any order; measured in
    # bench/convert.py it is ~1.5x faster for compressed qcow2 output (compression runs on
    # several threads) and no slower otherwise. The result is the same image, only laid out
    # less sequentially.
    argv = ["qemu-img", "convert", "-p", "-m", str(CONVERT_COROUTINES), "-W"]
    if compress:
        argv.append("-c")
    argv += ["-f", src_fmt, "-O", dst_fmt, "-o", "preallocation=off", str(src), str(dst)]
    return argv


async def convert(
    src: Path,
    src_fmt: str,
    dst: Path,
    dst_fmt: str,
    *,
    compress: bool,
    progress: ProgressCallback,
    timeout: float,
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

    argv = convert_argv(src, src_fmt, dst, dst_fmt, compress)
    try:
        await proc.run(argv, timeout=timeout, on_stdout_line=on_line)
    except proc.CommandError as exc:
        raise ToolFailed(f"qemu-img convert: {exc}") from exc
