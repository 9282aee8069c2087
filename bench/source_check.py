"""The cost of proving a source whole (the metadata walk) against conversion alone, one run.

Sources: the images bench.convert makes (64 MiB chunks, each 40 % random data then a hole),
at 2 GiB and 8 GiB, in every format with metadata: qcow2, VMDK monolithicSparse and
streamOptimized, VDI, VHD (dynamic), VHDX. Per source and round, in this order:
  walk        what the agent runs before qemu-img opens the file (agent.disk.image_safety:
              sniff, header checks, the format's metadata walk), in this process
  check       ``qemu-img check`` (the agent also runs it on VMDK sources only)
  convert     the agent's exact ``qemu-img convert`` command line to qcow2, output fsynced
              (the previous output deleted and ``sync`` run before the timer starts)
Medians over the rounds. The source stays in the page cache for every way (the walk reads a
few MiB of tables at most; cold, each table read is one seek more).

    python -m bench.source_check [--sizes-gib 2,8] [--rounds 3] [--formats qcow2,vdi,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.disk.image_safety import safe_input
from agent.disk.qemu_img import convert_argv
from agent.paths import PathPolicy, pinned_input
from bench.common import machine_line, print_table, wait_quiet

MiB = 1 << 20
GiB = 1 << 30
# name -> (qemu driver, -o options)
FORMATS: dict[str, tuple[str, str | None]] = {
    "qcow2": ("qcow2", None),
    "vmdk-monolithicSparse": ("vmdk", "subformat=monolithicSparse"),
    "vmdk-streamOptimized": ("vmdk", "subformat=streamOptimized"),
    "vdi": ("vdi", None),
    "vhd": ("vpc", "subformat=dynamic,force_size=on"),
    "vhdx": ("vhdx", None),
}


def build_raw(path: Path, size: int, data_fraction: float = 0.4) -> None:
    chunk = 64 * MiB
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, chunk):
            f.seek(offset)
            f.write(os.urandom(int(chunk * data_fraction)))


def build(raw: Path, directory: Path, name: str) -> Path:
    driver, options = FORMATS[name]
    target = directory / f"{name}.img"
    argv = ["qemu-img", "convert", "-f", "raw", "-O", driver]
    if options:
        argv += ["-o", options]
    subprocess.run([*argv, str(raw), str(target)], check=True)
    return target


def walk(path: Path, driver: str) -> float:
    policy = PathPolicy([path.parent], [path.parent])
    started = time.perf_counter()
    with (
        pinned_input(policy, path) as pinned,
        safe_input(policy, pinned, driver, path.parent / ".scratch"),
    ):
        pass
    return time.perf_counter() - started


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def convert(path: Path, driver: str, output: Path) -> float:
    output.unlink(missing_ok=True)
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    subprocess.run(
        convert_argv(path, driver, output, "qcow2", False), check=True, capture_output=True
    )
    fd = os.open(output, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.source_check", description=__doc__)
    parser.add_argument("--sizes-gib", default="2,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--max-load", type=float, default=0.0, help="0: do not wait")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the images")
    args = parser.parse_args(argv)
    names = [n for n in args.formats.split(",") if n]
    for size_gib in (float(s) for s in args.sizes_gib.split(",")):
        work = Path(tempfile.mkdtemp(prefix="h2k-bench-check-", dir=args.dir))
        try:
            raw = work / "src.raw"
            build_raw(raw, int(size_gib * GiB))
            images = {name: build(raw, work, name) for name in names}
            raw.unlink()
            if args.max_load:
                wait_quiet(args.max_load, 600)
            print(f"\n{machine_line()}")
            rows = []
            for name in names:
                driver = FORMATS[name][0]
                path = images[name]
                walks, checks, converts = [], [], []
                for _ in range(args.rounds):
                    walks.append(walk(path, driver))
                    checks.append(
                        timed(["qemu-img", "check", "-f", driver, str(path)])
                        if driver != "vpc"
                        else float("nan")
                    )
                    converts.append(convert(path, driver, work / "out.qcow2"))
                w, c, v = (statistics.median(x) for x in (walks, checks, converts))
                rows.append(
                    [
                        name,
                        f"{path.stat().st_size / MiB:.0f}",
                        f"{w * 1000:.1f}",
                        "n/a" if c != c else f"{c * 1000:.0f}",
                        f"{v:.2f}",
                        f"{100 * w / v:.2f} %",
                    ]
                )
                (work / "out.qcow2").unlink(missing_ok=True)
            print_table(
                f"{size_gib:g} GiB virtual, 40 % data, medians of {args.rounds} rounds",
                [
                    "source",
                    "file MiB",
                    "walk ms",
                    "qemu-img check ms",
                    "convert s",
                    "walk / convert",
                ],
                rows,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
