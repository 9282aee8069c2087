"""Repair benchmark: the overlay pipeline (repair in an overlay, trim, one copy) against
today's convert-then-repair, on a guest with a large deleted file and on one without.

Ways, each once per round in the same order, on the same source VMDK:
  overlay      the agent's run_repair as it is now: offline_fix in a qcow2 overlay over the
               read-only source, fstrim of the guest's file systems, one qemu-img convert
               from the overlay (parameters.sparsify default: true)
  overlay, no trim   the same with parameters.sparsify false: every block is kept
  convert+repair     the order before: the source's checks (inspect_input), the agent's exact
               qemu-img convert command line
               (agent.disk.qemu_img.convert_argv) into the output, then run_repair with
               parameters.in_place on that output (attached writable, repaired), fsync
  virt-sparsify      with --libguestfs (guestfs-tools, not part of setup.sh): libguestfs's trim
               of the guest's file systems in an overlay, then one copy (what virt-v2v does
               before its copy); output size only is comparable (its appliance runs under TCG)
  virt-v2v     with --libguestfs: ``virt-v2v -i disk SRC -o local``; on
               these synthetic guests (no kernel) it refuses, which the table says

Measured: wall time; bytes written by the way's processes (the children's write accounting,
getrusage RUSAGE_CHILDREN ru_oublock x 512: it counts pages as they are dirtied, so the
overlay's writes, the output's and the daemon's all count); the output's allocated bytes.
The guests are tests.support.guests' Debian-like disk: a root file system of --root-mib
holding a --data-mib file of random bytes, and (the "garbage" guest) the blocks of a
--garbage-mib file deleted again. Needs root (loop, FUSE, mount).

    python -m bench.repair_overlay [--root-mib 1024] [--data-mib 256] [--garbage-mib 512]
                                   [--rounds 2] [--libguestfs] [--max-load 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.disk import qemu_img
from agent.ops.base import JobContext
from agent.ops.image import inspect_input
from agent.ops.repair import run_repair
from agent.paths import PathPolicy
from agent.progress import ProgressReporter
from bench.common import machine_line, print_table, wait_quiet
from devsupport.specs import job_spec
from protocol.spec import parse_spec
from tests.support.guests import Tree, build_debian_like

MiB = 1024 * 1024


class _Quiet(ProgressReporter):
    """Progress that goes nowhere (the bench runs the operation in-process)."""

    def __init__(self) -> None:
        self.phase, self.percent = "start", 0.0

    def report(self, phase: str, percent: float, **_: Any) -> bool:
        return True


def _context(source: Path, outdir: Path, state: Path, job_id: str, **params: Any) -> JobContext:
    doc = job_spec(
        "offline_fix",
        image=source,
        image_format=source.suffix.lstrip("."),
        output=outdir,
        job_id=job_id,
        parameters={"output_format": "qcow2", "compress": False, **params},
        capability_requirements={"needs_mount": True},
    )
    policy = PathPolicy([source.parent, outdir], [outdir])
    return JobContext(parse_spec(doc), source, outdir, state, policy, _Quiet())


def written_bytes() -> int:
    """Bytes written so far by this process's finished children (pages they dirtied)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock * 512


def allocated(path: Path) -> int:
    """The file's allocated bytes (what ``du`` and qemu-img info's "disk size" say)."""
    return os.stat(path).st_blocks * 512


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    subprocess.run(["sync"], check=True)
    return directory


def overlay(source: Path, work: Path, sparsify: bool) -> Path:
    outdir = _fresh(work / "out")
    ctx = _context(source, outdir, work / "state", f"bench-{os.getpid()}", sparsify=sparsify)
    asyncio.run(run_repair(ctx))
    return outdir / f"{source.stem}.qcow2"


def convert_then_repair(source: Path, work: Path) -> Path:
    outdir = _fresh(work / "out")
    output = outdir / f"{source.stem}.qcow2"
    # As run_repair did before: the source's checks (qemu-img info, check), then the convert.
    asyncio.run(inspect_input(_context(source, outdir, work / "state", f"bench-{os.getpid()}")))
    argv = qemu_img.convert_argv(source, "vmdk", output, "qcow2", compress=False)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    ctx = _context(
        output, outdir, work / "state", f"bench-{os.getpid()}", in_place=True, sparsify=False
    )
    asyncio.run(run_repair(ctx))
    fd = os.open(output, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return output


def virt_sparsify(source: Path, work: Path) -> Path:
    outdir = _fresh(work / "out")
    output = outdir / f"{source.stem}.qcow2"
    argv = ["virt-sparsify", "-q", "--format", "vmdk", "--convert", "qcow2"]
    subprocess.run([*argv, str(source), str(output)], check=True, env=libguestfs_env())
    return output


def virt_v2v(source: Path, work: Path) -> Path:
    outdir = _fresh(work / "out")
    argv = ["virt-v2v", "-q", "-i", "disk", str(source), "-o", "local", "-os", str(outdir)]
    argv += ["-of", "qcow2"]
    subprocess.run(argv, check=True, env=libguestfs_env(), capture_output=True, text=True)
    return next(p for p in outdir.iterdir() if p.suffix != ".xml")


def libguestfs_env() -> dict[str, str]:
    """The environment for libguestfs tools: direct backend, appliance under TCG."""
    # KVM cannot run guests on this machine: the appliance runs under TCG.
    return {
        **os.environ,
        "LIBGUESTFS_BACKEND": "direct",
        "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg",
    }


def _measure(way: Callable[[Path, Path], Path], source: Path, work: Path) -> dict[str, Any]:
    written = written_bytes()
    started = time.monotonic()
    try:
        output = way(source, work)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or "").strip().splitlines()[-1:] if exc.stderr else []
        return {"error": f"exit {exc.returncode}: {' '.join(tail)[:120]}"}
    seconds = time.monotonic() - started
    return {
        "seconds": seconds,
        "written": written_bytes() - written,
        "output": allocated(output),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.repair_overlay", description=__doc__)
    parser.add_argument("--root-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--garbage-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--libguestfs",
        action="store_true",
        help="also run virt-sparsify and virt-v2v -i disk (Debian's guestfs-tools, virt-v2v)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.0,
        help="before each round, wait (at most --max-wait s) for the 1-minute load to drop below",
    )
    parser.add_argument("--max-wait", type=float, default=600.0)
    args = parser.parse_args(argv)
    ways: dict[str, Callable[[Path, Path], Path]] = {
        "overlay (trim, one copy)": lambda s, w: overlay(s, w, True),
        "overlay, sparsify false": lambda s, w: overlay(s, w, False),
        "convert then repair (before)": convert_then_repair,
    }
    if args.libguestfs and shutil.which("virt-sparsify"):
        ways["virt-sparsify"] = virt_sparsify
    if args.libguestfs and shutil.which("virt-v2v"):
        ways["virt-v2v -i disk -o local"] = virt_v2v
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="h2k-bench-repair-") as tmp:
        work = Path(tmp)
        guests = {}
        data: Tree = {"/srv/data.bin": os.urandom(args.data_mib * MiB)}
        for name, garbage in (("garbage", args.garbage_mib), ("clean", 0)):
            (work / name).mkdir()
            disk = build_debian_like(
                work / name, name, garbage_mib=garbage, size_mib=args.root_mib, extra=data
            )
            guests[name] = disk.path
        print(machine_line())
        for name, source in guests.items():
            results: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
            loads = []
            for _ in range(args.rounds):
                if args.max_load:
                    wait_quiet(args.max_load, args.max_wait)
                loads.append(os.getloadavg()[0])
                for way, run in ways.items():
                    results[way].append(_measure(run, source, work / "run"))
            rows = []
            for way, runs in results.items():
                ok = [r for r in runs if "error" not in r]
                if not ok:
                    rows.append([way, runs[0]["error"], "", "", ""])
                    continue
                rows.append(
                    [
                        way,
                        statistics.median(r["seconds"] for r in ok),
                        f"{min(r['seconds'] for r in ok):.1f}-{max(r['seconds'] for r in ok):.1f}",
                        statistics.median(r["written"] for r in ok) / MiB,
                        statistics.median(r["output"] for r in ok) / MiB,
                    ]
                )
            title = (
                f"guest {name}: {source.stat().st_blocks * 512 / MiB:.0f} MiB VMDK, root "
                f"{args.root_mib} MiB with {args.data_mib} MiB of data"
                + (f" and {args.garbage_mib} MiB deleted" if name == "garbage" else "")
                + f"; {args.rounds} rounds, load at their start {min(loads):.1f}-{max(loads):.1f}"
            )
            header = ["way", "wall s (median)", "range", "written MiB", "output MiB"]
            print_table(title, header, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
