"""Run every benchmark: `python -m bench` (`make bench`); `--quick` for a short pass of each."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import convert, digest, fanout, memory, migrate, schedule, source_check, submit, wave
from bench.common import wait_quiet

# The full runs the numbers in BENCHMARKS.md come from, and a short pass of each script.
FULL: dict[str, tuple[Callable[[list[str]], int], list[str]]] = {
    "convert": (convert.main, ["--rounds", "3"]),
    "submit": (submit.main, []),
    "schedule": (schedule.main, []),
    "fanout": (fanout.main, []),
    "memory": (memory.main, []),
    "migrate": (migrate.main, ["--rounds", "3"]),
    "source_check": (source_check.main, ["--sizes-gib", "2,8", "--rounds", "3"]),
    "digest": (digest.main, ["--rounds", "3"]),
    "wave": (wave.main, []),
}
QUICK: dict[str, list[str]] = {
    "convert": ["--size-gib", "0.25", "--rounds", "1", "--subformats", "monolithicSparse"],
    "submit": ["--seconds", "2"],
    "schedule": ["--jobs", "500", "--agents", "20", "--latency-jobs", "50"],
    "fanout": ["--watchers", "1,10", "--seconds", "1", "--lead-in", "1"],
    "memory": ["--jobs", "2000", "--image-gib", "0.25"],
    "migrate": ["--quick"],
    "source_check": ["--sizes-gib", "0.25", "--rounds", "1"],
    "digest": ["--quick"],
    "wave": ["--quick"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short pass of each benchmark")
    parser.add_argument("--only", action="append", choices=sorted(FULL), default=[])
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.7,
        help="before each benchmark wait (up to 10 min) for the 1-minute load to drop below this",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for name in args.only or list(FULL):
        run, full_args = FULL[name]
        if not args.quick:
            load = wait_quiet(args.max_load, 600)
            print(f"\n## {name} (1-minute load at start: {load:.2f})", flush=True)
        run(QUICK[name] if args.quick else full_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
