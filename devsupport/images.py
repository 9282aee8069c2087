"""Build small real disk images with data and holes, in every v1 input format."""

from __future__ import annotations

import json
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MiB = 1024 * 1024

# (name, qemu-img -O driver, -o options, v1 format name)
VARIANTS: dict[str, tuple[str, str | None, str]] = {
    "vmdk-monolithicSparse": ("vmdk", "subformat=monolithicSparse", "vmdk"),
    "vmdk-streamOptimized": ("vmdk", "subformat=streamOptimized", "vmdk"),
    "vmdk-twoGbMaxExtentSparse": ("vmdk", "subformat=twoGbMaxExtentSparse", "vmdk"),
    "vhdx": ("vhdx", None, "vhdx"),
    "vhd": ("vpc", "subformat=dynamic,force_size=on", "vhd"),
    "vdi": ("vdi", None, "vdi"),
    "qcow2": ("qcow2", None, "qcow2"),
    "raw": ("raw", None, "raw"),
}

SUFFIX = {
    "vmdk": "vmdk",
    "vhdx": "vhdx",
    "vpc": "vhd",
    "vdi": "vdi",
    "qcow2": "qcow2",
    "raw": "img",
}


@dataclass(frozen=True)
class BuiltImage:
    path: Path
    qemu_format: str
    v1_format: str
    virtual_size: int


def write_raw_with_holes(path: Path, size: int, seed: int = 7) -> None:
    """A sparse raw file: random data in a few extents, holes elsewhere, an MBR signature."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, 8 * MiB):
            f.seek(offset + MiB)
            f.write(rng.randbytes(MiB + 4096 * rng.randint(1, 64)))
        f.seek(size - 2 * MiB)
        f.write(b"h2k-end-marker" * 1000)


def build_image(directory: Path, variant: str, size: int = 32 * MiB, stem: str = "") -> BuiltImage:
    """Build ``variant`` (a key of VARIANTS) from a raw file with data and holes."""
    driver, options, v1_format = VARIANTS[variant]
    directory.mkdir(parents=True, exist_ok=True)
    stem = stem or variant.replace("-", "_")
    raw = directory / f".{stem}.src.raw"
    write_raw_with_holes(raw, size)
    target = directory / f"{stem}.{SUFFIX[driver]}"
    if driver == "raw":
        os.replace(raw, target)
    else:
        argv = ["qemu-img", "convert", "-f", "raw", "-O", driver]
        if options:
            argv += ["-o", options]
        subprocess.run([*argv, str(raw), str(target)], check=True, timeout=120)
        raw.unlink()
    return BuiltImage(path=target, qemu_format=driver, v1_format=v1_format, virtual_size=size)


def compare(
    source: BuiltImage, output: Path, output_format: str
) -> subprocess.CompletedProcess[str]:
    """``qemu-img compare`` of a source image and its output (callers check virtual sizes)."""
    return subprocess.run(
        [
            "qemu-img",
            "compare",
            "-f",
            source.qemu_format,
            "-F",
            output_format,
            str(source.path),
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def image_info(path: Path, image_format: str = "qcow2") -> dict[str, Any]:
    """``qemu-img info`` of an image, as its JSON."""
    run = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", image_format, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(json.loads(run.stdout))


SLOW_IMAGE_MIB = 256


def write_random_raw(path: Path, mib: int) -> None:
    """Incompressible data: compressing it keeps qemu-img busy (about 60 MiB/s here)."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MiB))
