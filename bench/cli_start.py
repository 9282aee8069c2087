"""h2kctl start-up: how long the CLI takes before it does anything, against bare Python.

Each way is run ``--rounds`` times, interleaved (one of each per round), from launch to
exit: ``python -c pass`` (the floor), ``h2kctl --help`` and ``h2kctl submit --help`` (every
import a submit needs, no server) — with this checkout's h2kctl and, with ``--baseline-bin``,
another checkout's (e.g. main's ``.venv/bin``) side by side.

    python -m bench.cli_start [--rounds 10] [--baseline-bin /work/main/.venv/bin]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine_line, median, percentile, print_table

HERE = Path(sys.executable).parent


def _ways(baseline: Path | None) -> dict[str, list[str]]:
    ways = {"python -c pass": [sys.executable, "-c", "pass"]}
    for tag, bin_dir in (("", HERE), (" (baseline)", baseline)):
        if bin_dir is None:
            continue
        ways[f"h2kctl --help{tag}"] = [str(bin_dir / "h2kctl"), "--help"]
        ways[f"h2kctl submit --help{tag}"] = [str(bin_dir / "h2kctl"), "submit", "--help"]
    return ways


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_start", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--baseline-bin", type=Path, help="another checkout's venv bin dir")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    ways = _ways(args.baseline_bin)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, argv_ in ways.items():
            began = time.perf_counter()
            subprocess.run(argv_, check=True, capture_output=True, timeout=60)
            times[name].append(time.perf_counter() - began)
    floor = median(times["python -c pass"])
    rows = [
        [name, median(t), percentile(t, 10), f"{median(t) / floor:.1f}x"]
        for name, t in times.items()
    ]
    print_table(
        f"CLI start-up, {args.rounds} rounds; {machine_line()}",
        ["way", "median s", "p10 s", "vs python -c pass"],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
