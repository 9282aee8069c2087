"""h2kctl start-up: how long the CLI takes before it does anything, against bare Python.

Each way is run ``--rounds`` times, interleaved (one of each per round), from launch to
exit: ``python -c pass`` (the floor), ``h2kctl --help``, ``h2kctl submit --help`` (typer
renders help with rich, so this one imports rich whatever the CLI does) and ``h2kctl submit
JOB`` of a job file whose one error is its last field (every import a submit needs and the
whole validation of the file, then exit 2 before anything is sent: no server needed) — with
this checkout's h2kctl and, with ``--baseline-bin``, another checkout's (e.g. main's
``.venv/bin``) side by side.

    python -m bench.cli_start [--rounds 10] [--baseline-bin /work/main/.venv/bin]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_line, median, percentile, print_table
from devsupport.specs import job_spec

HERE = Path(sys.executable).parent


def invalid_job(directory: Path) -> Path:
    """A convert job whose only error is its last field: validation reads all of it."""
    doc = job_spec(image="/data/input/vm.vmdk", output="/data/output")
    doc["parameters"] = {"output_format": "qcow2", "compress": "maybe"}
    path = directory / "invalid-job.json"
    path.write_text(json.dumps(doc))
    return path


def _ways(baseline: Path | None, job: Path) -> dict[str, tuple[list[str], int]]:
    """Each way's argv and the exit status it must end with."""
    ways = {"python -c pass": ([sys.executable, "-c", "pass"], 0)}
    for tag, bin_dir in (("", HERE), (" (baseline)", baseline)):
        if bin_dir is None:
            continue
        h2kctl = str(bin_dir / "h2kctl")
        ways[f"h2kctl --help{tag}"] = ([h2kctl, "--help"], 0)
        ways[f"h2kctl submit --help{tag}"] = ([h2kctl, "submit", "--help"], 0)
        submit = [h2kctl, "--server", "127.0.0.1:1", "--insecure", "submit", str(job)]
        ways[f"h2kctl submit JOB, to validation{tag}"] = (submit, 2)
    return ways


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_start", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--baseline-bin", type=Path, help="another checkout's venv bin dir")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    scratch = Path(tempfile.mkdtemp(prefix="h2k-cli-start-"))
    ways = _ways(args.baseline_bin, invalid_job(scratch))
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, (argv_, status) in ways.items():
            began = time.perf_counter()
            done = subprocess.run(argv_, capture_output=True, text=True, timeout=60)
            times[name].append(time.perf_counter() - began)
            if done.returncode != status:
                raise SystemExit(f"{name}: exit {done.returncode}, not {status}:\n{done.stderr}")
    (scratch / "invalid-job.json").unlink()
    scratch.rmdir()
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
