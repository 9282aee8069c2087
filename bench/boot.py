"""Boot-check benchmark: what ``parameters.boot_check`` adds to a repair, and virt-v2v beside it.

On the real Debian 12 guests of tests/support/debian_guests.py (built and cached on first use;
needs root), every way once per round, in the same order, on a fresh copy of the guest:

  repair          ``offline_fix`` job through a real control plane and agent, submit to
                  terminal state (the baseline of the same run)
  repair + boot   the same job with ``boot_check: true``: the difference is what the check
                  adds; its verdict and time to userspace come from the job's report
  virt-v2v        ``virt-v2v -i disk <vmdk> -o local -os <dir> -of qcow2`` (Debian's package,
                  when installed; never installed by setup.sh), then its output booted by the
                  same boot check, outside its timer, to say whether it boots

    python -m bench.boot [--layouts bios,uefi] [--rounds 1] [--no-v2v]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine_line, median, print_table
from devsupport.cluster import running_cluster
from tests.support.debian_guests import copy_guest
from tests.support.repair_jobs import repair_spec, report_of, run_job

BOOT_SECONDS = 300
JOB_TIMEOUT = 1200


def _job(cluster: Any, image: Path, outdir: Path, boot: bool) -> tuple[float, dict[str, Any]]:
    outdir.mkdir(parents=True)
    params: dict[str, Any] = (
        {"boot_check": True, "boot_check_seconds": BOOT_SECONDS} if boot else {}
    )
    doc = repair_spec("offline_fix", image, outdir, **params)
    started = time.monotonic()
    result = run_job(cluster, doc, timeout=JOB_TIMEOUT)
    seconds = time.monotonic() - started
    report = report_of(outdir, doc["job_id"])
    return seconds, {"state": result["state"], "report": report}


def _boot(disk: Path, fmt: str, firmware: str, workdir: Path) -> dict[str, Any]:
    from agent.boot.check import GuestDisk, boot_check

    result = asyncio.run(
        boot_check([GuestDisk(disk, fmt)], firmware, workdir, time_limit=BOOT_SECONDS)
    )
    return result.describe()


def _v2v(image: Path, outdir: Path) -> tuple[float, str, list[str]]:
    outdir.mkdir(parents=True)
    argv = ["virt-v2v", "-i", "disk", str(image), "-o", "local", "-os", str(outdir),
            "-of", "qcow2", "-on", "v2v-guest"]  # fmt: skip
    started = time.monotonic()
    env = {"LIBGUESTFS_BACKEND": "direct", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=JOB_TIMEOUT, env=env)
    seconds = time.monotonic() - started
    log = (done.stdout + done.stderr).splitlines()
    status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
    return seconds, status, log


def _changed(report: dict[str, Any]) -> str:
    return ", ".join(sorted({f["path"] for f in report.get("files", [])})) or "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", default="bios,uefi")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-v2v", action="store_true")
    args = parser.parse_args(argv)
    v2v = not args.no_v2v and shutil.which("virt-v2v") is not None
    rows = []
    changes = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as name:
        work = Path(name)
        with running_cluster(work / "cluster") as cluster:
            for layout in args.layouts.split(","):
                times: dict[str, list[float]] = {"repair": [], "repair + boot": [], "v2v": []}
                verdicts: dict[str, str] = {}
                for index in range(args.rounds):
                    tag = f"{layout}-{index}"
                    guest = copy_guest(layout, cluster.input_dir / tag)
                    seconds, plain = _job(
                        cluster, guest.disks[0], cluster.output_dir / f"p-{tag}", False
                    )
                    times["repair"].append(seconds)
                    verdicts["repair"] = plain["state"]
                    seconds, checked = _job(
                        cluster, guest.disks[0], cluster.output_dir / f"b-{tag}", True
                    )
                    times["repair + boot"].append(seconds)
                    check = checked["report"].get("boot_check", {})
                    verdicts["repair + boot"] = (
                        f"{checked['state']}; {check.get('result')} "
                        f"{check.get('seconds_to_userspace', check.get('stage', ''))} s"
                    )
                    if index == 0:
                        changes.append((layout, "h2k", _changed(checked["report"])))
                    if v2v:
                        seconds, status, log = _v2v(guest.disks[0], work / f"v2v-{tag}")
                        times["v2v"].append(seconds)
                        out = work / f"v2v-{tag}" / "v2v-guest-sda"
                        booted = (
                            _boot(out, "qcow2", guest.firmware, work / f"boot-{tag}")
                            if out.exists() else {"result": "no output"}
                        )  # fmt: skip
                        verdicts["v2v"] = (
                            f"{status}; {booted['result']} {booted.get('stage') or ''}"
                        )
                        if index == 0:
                            changes.append((layout, "virt-v2v", " / ".join(log[-8:])))
                for way, values in times.items():
                    if values:
                        rows.append(
                            (layout, way, f"{median(values):.1f}", len(values), verdicts[way])
                        )
    print_table(
        f"Boot check and virt-v2v on debootstrapped Debian 12 guests ({machine_line()})",
        ["guest", "way", "median s", "rounds", "result"],
        rows,
    )
    print_table("What each changed (first round)", ["guest", "tool", "changes"], changes)


if __name__ == "__main__":
    main()
