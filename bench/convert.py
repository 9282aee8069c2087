"""Conversion benchmark: h2k against bare qemu-img, measured side by side in one run.

Ways, run in alternation for several rounds, medians reported:
  plain    qemu-img convert -f vmdk -O qcow2 SRC DST (how the original worker calls it)
  tuned    each candidate flag set the agent could use (the agent's choice is marked)
  h2k      a convert job through `h2kctl submit --watch` on a running control plane + agent
  cp       cp --sparse=always of the same file (the floor: no format work at all)

    python -m bench.convert --size-gib 2 --rounds 3 [--compress]
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

from tests.support.cluster import running_cluster
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--data-fraction", type=float, default=0.4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subformat", default="monolithicSparse")
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="h2k-bench-", dir=args.workdir))
    try:
        with running_cluster(work) as cluster:
            src = build_source(
                cluster.input_dir,
                int(args.size_gib * (1 << 30)),
                args.data_fraction,
                args.subformat,
            )
            scratch = work / "scratch"
            scratch.mkdir()
            ways: dict[str, Callable[[], None]] = {
                "plain": qemu_convert(src, scratch / "plain.qcow2", [], args.compress),
            }
            for name, flags in CANDIDATES.items():
                ways[f"tuned {name}"] = qemu_convert(
                    src, scratch / f"{name}.qcow2", flags, args.compress
                )

            counter = iter(range(10_000))

            def via_h2k() -> None:
                out = cluster.output_dir / f"r{next(counter)}"
                out.mkdir()
                doc = job_spec(
                    image=src,
                    output=out,
                    parameters={"output_format": "qcow2", "compress": args.compress},
                )
                cluster.h2kctl(
                    "submit", str(cluster.write_job(doc)), "--watch", check=True, timeout=3600
                )
                shutil.rmtree(out)

            def sparse_cp() -> None:
                subprocess.run(
                    ["cp", "--sparse=always", str(src), str(scratch / "cp.vmdk")], check=True
                )
                with open(scratch / "cp.vmdk", "rb") as f:
                    os.fsync(f.fileno())

            ways["h2k"] = via_h2k
            ways["cp --sparse"] = sparse_cp
            times: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(args.rounds):
                for name, action in ways.items():
                    times[name].append(timed(action))
            report(times, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(times: dict[str, list[float]], args: argparse.Namespace) -> None:
    medians = {name: statistics.median(values) for name, values in times.items()}
    plain = medians["plain"]
    best_tuned = min((v, k) for k, v in medians.items() if k.startswith("tuned"))
    print(
        f"\nconvert {args.size_gib} GiB {args.subformat} VMDK, {args.data_fraction:.0%} data, "
        f"compress={args.compress}, {args.rounds} rounds, median seconds"
    )
    print(f"{'way':24} {'median s':>9} {'vs plain':>9} {'vs best tuned':>14}")
    for name, median in medians.items():
        print(f"{name:24} {median:9.2f} {plain / median:8.2f}x {median / best_tuned[0]:13.2f}x")
    print(f"best tuned: {best_tuned[1]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
