"""Soak: the reliability fault scenarios in a loop, each round on a fresh cluster.

Every round runs each scenario of ``tests/reliability/scenarios.py`` once (real processes,
SIGKILL for crashes), in a random order, and records pass/fail and its measurements. A failed
scenario's process logs are kept under the work directory. Run by hand:

    python -m bench.soak --minutes 10            # until 10 minutes have passed
    python -m bench.soak --rounds 3 --only agent_killed_with_retry_left
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devsupport.images import SLOW_IMAGE_MIB, write_random_raw
from tests.reliability import scenarios
from tests.support.faults import FaultCluster

Scenario = Callable[[FaultCluster], dict[str, Any]]

SCENARIOS: dict[str, Scenario] = {
    "controlplane_killed_during_jobs": scenarios.controlplane_killed_during_jobs,
    "watcher_through_kill_9": lambda c: scenarios.watcher_through_controlplane_restart(
        c, signal.SIGKILL
    ),
    "watcher_through_sigterm": lambda c: scenarios.watcher_through_controlplane_restart(
        c, signal.SIGTERM
    ),
    "submissions_survive_kill": lambda c: scenarios.submissions_survive_kill(c, count=1000),
    "agent_killed_with_retry_left": scenarios.agent_killed_with_retry_left,
    "agent_lost_without_retry": lambda c: scenarios.agent_killed_without_retry(c, False),
    "agent_restarted_without_retry": lambda c: scenarios.agent_killed_without_retry(c, True),
    "drain_with_running_job": scenarios.drain_with_running_job,
    "drain_deadline_requeues": scenarios.drain_deadline_requeues,
    "sigterm_agent_within_grace": scenarios.sigterm_agent_within_grace,
    "sigterm_agent_past_grace": scenarios.sigterm_agent_past_grace,
    "job_times_out": scenarios.job_times_out,
    "slow_watcher": scenarios.slow_watcher_does_not_hold_anyone_up,
}


def run_once(name: str, source: Path, workdir: Path) -> tuple[bool, dict[str, Any], float]:
    """One scenario on a fresh cluster; the cluster's files are removed when it passed."""
    cluster = FaultCluster(workdir)
    os.link(source, cluster.input_dir / "slow.img")
    started = time.monotonic()
    try:
        measured = SCENARIOS[name](cluster)
        ok = True
    except Exception:
        measured = {"error": traceback.format_exc(limit=3).strip().splitlines()[-1]}
        (workdir / "failure.txt").write_text(traceback.format_exc() + "\n" + cluster.logs())
        ok = False
    finally:
        cluster.stop()
    took = time.monotonic() - started
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return ok, measured, took


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="stop starting rounds after")
    parser.add_argument("--rounds", type=int, default=0, help="run this many rounds (0: time)")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=[])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Loop the scenarios; print one line per run and a summary; exit 1 on any failure."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rng = random.Random(args.seed)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="h2k-soak-"))
    source = root / "slow.img"
    write_random_raw(source, SLOW_IMAGE_MIB)
    names = args.only or sorted(SCENARIOS)
    results: dict[str, list[bool]] = defaultdict(list)
    deadline = time.monotonic() + args.minutes * 60
    round_number = 0
    while (args.rounds and round_number < args.rounds) or (
        not args.rounds and time.monotonic() < deadline
    ):
        round_number += 1
        for name in rng.sample(names, len(names)):
            workdir = root / f"round-{round_number:03d}-{name}"
            ok, measured, took = run_once(name, source, workdir)
            results[name].append(ok)
            verdict = "ok  " if ok else "FAIL"
            print(f"round={round_number} {verdict} {name} took={took:.1f}s {measured}", flush=True)
    print(f"\nsoak: {round_number} rounds under {root}")
    for name in names:
        runs = results[name]
        print(f"  {name:<32} {sum(runs)}/{len(runs)} passed")
    return 0 if all(all(r) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
