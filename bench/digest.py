"""What hashing costs: the output's sha256 (every result carries it) and ``image.checksum``
(the source hashed before it is read), each against the conversion alone, in one run.

Ways, each once per round, in the same order every round; medians (and ranges) over rounds:
  convert          the agent's qemu-img argv (uncompressed qcow2) into a new file it writes
                   through /proc/<pid>/fd/<n>, with the agent's early write-back, then fsync:
                   what a convert job does without hashing
  convert+sha256   the same, then the output hashed (agent.disk.digest, as convert does it
                   before the rename: most of the file is still in the page cache), then fsync
  checksum+convert image.checksum: the source hashed (agent.disk.checksum) before the same
                   conversion
  sha256 alone     the output hashed again (page cache warm): the CPU floor of hashing

Before each timer the previous output is deleted and `sync` has run; the source stays in the
page cache (as it does right after an export). Every output is checked equal to the source
with `qemu-img compare` in the first round (outside the timer).

    python -m bench.digest [--quick] [--size-mib 1024] [--rounds 3] [--compressed]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.disk.checksum import _sha256 as source_sha256
from agent.disk.digest import _sha256_of_fd as output_sha256
from agent.disk.qemu_img import convert_argv
from agent.disk.writeback import WRITEBACK_INTERVAL, start_writeback
from bench.common import machine_line, print_table, wait_quiet

MiB = 1 << 20


def _make_source(path: Path, mib: int) -> None:
    """Random data in every other MiB (holes between), like a used disk."""
    with open(path, "wb") as f:
        f.truncate(mib * MiB)
        for i in range(0, mib, 2):
            f.seek(i * MiB)
            f.write(os.urandom(MiB))


COMPRESS = {"value": False}  # --compressed: qemu-img -c (zlib), as convert's default


def _convert(source: Path, target: Path, hash_output: bool) -> None:
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        dst = Path(f"/proc/{os.getpid()}/fd/{fd}")
        argv = convert_argv(source, "raw", dst, "qcow2", COMPRESS["value"])
        argv.remove("-p")
        stop = threading.Event()

        def hint() -> None:
            while not stop.wait(WRITEBACK_INTERVAL):
                start_writeback(fd)

        hinter = threading.Thread(target=hint)
        hinter.start()
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=600)
        finally:
            stop.set()
            hinter.join()
        if hash_output:
            output_sha256(fd)
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_source(source: Path) -> None:
    fd = os.open(source, os.O_RDONLY)
    try:
        source_sha256(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _checksum_then_convert(source: Path, target: Path) -> None:
    _hash_source(source)
    _convert(source, target, hash_output=False)


def _hash_again(target: Path) -> None:
    fd = os.open(target, os.O_RDONLY)
    try:
        output_sha256(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.digest", description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 MiB, 1 round")
    parser.add_argument("--max-load", type=float, default=0.7)
    parser.add_argument("--compressed", action="store_true", help="compressed qcow2 (zlib)")
    args = parser.parse_args(argv)
    COMPRESS["value"] = args.compressed
    size, rounds = (64, 1) if args.quick else (args.size_mib, args.rounds)
    with tempfile.TemporaryDirectory(prefix="h2k-bench-digest-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        source = work / "source.raw"
        _make_source(source, size)
        target = work / "out.qcow2"
        ways: dict[str, Callable[[], None]] = {
            "convert": lambda: _convert(source, target, hash_output=False),
            "convert+sha256": lambda: _convert(source, target, hash_output=True),
            "checksum+convert": lambda: _checksum_then_convert(source, target),
        }
        times: dict[str, list[float]] = {name: [] for name in [*ways, "sha256 alone"]}
        loads = []
        for number in range(rounds):
            loads.append(wait_quiet(args.max_load, 120 if not args.quick else 0))
            for name, way in ways.items():
                target.unlink(missing_ok=True)
                subprocess.run(["sync"], check=True)
                started = time.perf_counter()
                way()
                times[name].append(time.perf_counter() - started)
                if number == 0:
                    subprocess.run(
                        [
                            "qemu-img",
                            "compare",
                            "-f",
                            "raw",
                            "-F",
                            "qcow2",
                            str(source),
                            str(target),
                        ],
                        check=True,
                        capture_output=True,
                    )
            started = time.perf_counter()
            _hash_again(target)
            times["sha256 alone"].append(time.perf_counter() - started)
    base = statistics.median(times["convert"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(
            [
                name,
                f"{median:.2f}",
                f"{min(values):.2f}-{max(values):.2f}",
                f"{size / median:.0f}" if name != "sha256 alone" else "-",
                "-"
                if name in ("convert", "sha256 alone")
                else f"{(median / base - 1) * 100:+.0f} %",
            ]
        )
    print(machine_line())
    print_table(
        f"{size} MiB raw (half data) to {'compressed ' if args.compressed else ''}qcow2, "
        f"{rounds} rounds "
        f"(load at the rounds' starts {', '.join(f'{x:.1f}' for x in loads)})",
        ["way", "median s", "range s", "virtual MiB/s", "vs convert"],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
