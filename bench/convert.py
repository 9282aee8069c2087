"""Conversion benchmark: h2k against bare qemu-img, measured side by side in one run.

Ways, run in alternation for several rounds, medians reported:
  plain    qemu-img convert -f vmdk -O qcow2 SRC DST (how the original worker calls it)
  tuned    each candidate flag set the agent could use (the agent's choice is marked)
  h2k      a convert job through `h2kctl submit --watch` on a running control plane + agent
  cp       cp --sparse=always of the same file (the floor: no format work at all)

    python -m bench.convert [--size-gib 2] [--rounds 5] [--subformats monolithicSparse,...]
                            [--modes uncompressed,compressed]
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_line, print_table, verdict
from tests.support.cluster import Cluster, running_cluster
from tests.support.specs import job_spec

MiB = 1 << 20

CANDIDATES: dict[str, list[str]] = {
    "m8": ["-m", "8"],
    "m16-W": ["-m", "16", "-W"],
    "m8-W-tnone": ["-m", "8", "-W", "-t", "none"],
    "m16-W-tnone-Tnone": ["-m", "16", "-W", "-t", "none", "-T", "none"],
}


def build_source(directory: Path, size: int, data_fraction: float, subformat: str) -> Path:
    """A VMDK whose extents alternate between random data and holes."""
    raw = directory / "src.raw"
    chunk = 64 * MiB
    with open(raw, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, chunk):
            f.seek(offset)
            f.write(os.urandom(int(chunk * data_fraction)))
    vmdk = directory / f"vm-{subformat}.vmdk"
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            f"subformat={subformat}",
            str(raw),
            str(vmdk),
        ],
        check=True,
    )
    raw.unlink()
    return vmdk


def timed(action: Callable[[], None]) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def qemu_convert(src: Path, dst: Path, flags: list[str], compress: bool) -> Callable[[], None]:
    def run() -> None:
        dst.unlink(missing_ok=True)
        extra = ["-c"] if compress else []
        subprocess.run(
            [
                "qemu-img",
                "convert",
                *flags,
                *extra,
                "-f",
                "vmdk",
                "-O",
                "qcow2",
                str(src),
                str(dst),
            ],
            check=True,
        )
        with open(dst, "rb") as f:  # the agent fsyncs; so must the baselines
            os.fsync(f.fileno())

    return run


def measure(
    cluster: Cluster, src: Path, scratch: Path, compress: bool, rounds: int
) -> dict[str, list[float]]:
    """Every way once per round, in the same order each round; all times of each way."""
    ways: dict[str, Callable[[], None]] = {
        "plain": qemu_convert(src, scratch / "plain.qcow2", [], compress),
    }
    for name, flags in CANDIDATES.items():
        ways[f"tuned {name}"] = qemu_convert(src, scratch / f"{name}.qcow2", flags, compress)
    counter = iter(range(10_000))

    def via_h2k() -> None:
        out = cluster.output_dir / f"r{next(counter)}"
        out.mkdir()
        doc = job_spec(
            image=src, output=out, parameters={"output_format": "qcow2", "compress": compress}
        )
        cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", check=True, timeout=3600)
        shutil.rmtree(out)

    def sparse_cp() -> None:
        subprocess.run(["cp", "--sparse=always", str(src), str(scratch / "cp.vmdk")], check=True)
        with open(scratch / "cp.vmdk", "rb") as f:
            os.fsync(f.fileno())

    ways["h2k"] = via_h2k
    ways["cp --sparse"] = sparse_cp
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, action in ways.items():
            times[name].append(timed(action))
    for leftover in scratch.iterdir():
        leftover.unlink()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.convert", description=__doc__)
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--data-fraction", type=float, default=0.4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--subformats", default="monolithicSparse,streamOptimized")
    parser.add_argument("--modes", default="uncompressed,compressed")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    work = Path(tempfile.mkdtemp(prefix="h2k-bench-", dir=args.workdir))
    try:
        with running_cluster(work) as cluster:
            scratch = work / "scratch"
            scratch.mkdir()
            for subformat in args.subformats.split(","):
                src = build_source(
                    cluster.input_dir,
                    int(args.size_gib * (1 << 30)),
                    args.data_fraction,
                    subformat,
                )
                for mode in args.modes.split(","):
                    compress = mode == "compressed"
                    times = measure(cluster, src, scratch, compress, args.rounds)
                    report(times, args, subformat, compress)
                src.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    times: dict[str, list[float]], args: argparse.Namespace, subformat: str, compress: bool
) -> bool:
    medians = {name: statistics.median(values) for name, values in times.items()}
    plain = medians["plain"]
    best_value, best_name = min((v, k) for k, v in medians.items() if k.startswith("tuned"))
    h2k = medians["h2k"]
    rows = [
        [
            name,
            median,
            f"{min(times[name]):.2f}-{max(times[name]):.2f}",
            f"{plain / median:.2f}x",
            f"{median / best_value:.2f}x",
        ]
        for name, median in medians.items()
    ]
    print_table(
        f"convert {args.size_gib:g} GiB {subformat} VMDK -> qcow2, {args.data_fraction:.0%} data, "
        f"{'compressed' if compress else 'uncompressed'}, {args.rounds} rounds; {machine_line()}",
        ["way", "median s", "range s", "speed vs plain", "time vs best tuned"],
        rows,
    )
    near_best = h2k <= 1.10 * best_value
    twice = plain / h2k >= 2.0
    print(f"best tuned: {best_name}; h2k vs cp --sparse floor: {h2k / medians['cp --sparse']:.1f}x")
    print(f"bar: h2k <= 1.10 x best tuned ({h2k / best_value:.2f}x): {verdict(near_best)}")
    print(f"bar: h2k >= 2x faster than plain ({plain / h2k:.2f}x): {verdict(twice)}")
    return near_best and twice


if __name__ == "__main__":
    sys.exit(main())
