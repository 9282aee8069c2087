"""Shared pieces of the benchmarks: tables, percentiles, quiet-machine wait, processes, RSS."""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devsupport.cluster import Cluster, Process  # noqa: E402
from protocol.gen.h2k.v1 import agent_pb2, job_pb2  # noqa: E402

MiB = 1 << 20

_DOCUMENT: dict[str, Any] = {
    "version": "1.0",
    "job_id": "bench-0",
    "operation": "convert",
    "image": {"path": "/data/input/vm.vmdk", "format": "vmdk"},
    "execution_policy": {"priority": 5},
    "artifacts": {"output_path": "/data/output"},
    "audit": {"requested_by": "bench"},
    "parameters": {"output_format": "qcow2"},
}


def spec_message(job_id: str) -> job_pb2.JobSpec:
    """The protobuf spec of a small, valid convert job (what h2kctl would send)."""
    body = copy.deepcopy(_DOCUMENT)
    body["job_id"] = job_id
    body["operation"] = "OPERATION_CONVERT"
    return json_format.ParseDict(body, job_pb2.JobSpec())


def capabilities() -> agent_pb2.Capabilities:
    """What a fake agent reports: qemu-img, plenty of memory and disk."""
    return agent_pb2.Capabilities(
        probes=[agent_pb2.CapabilityProbe(name="qemu_img", available=True)],
        memory_total_bytes=16 << 30,
        disk_free_bytes=200 << 30,
    )


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table (paste-ready for BENCHMARKS.md) under a title line."""
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}\n")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def machine_line() -> str:
    """Cores, load and Python: printed with every table so a result carries its context."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"machine: {os.cpu_count()} cpus, loadavg {' '.join(load)}, python {sys.version.split()[0]}"
    )


def wait_quiet(max_load: float, max_wait: float) -> float:
    """Wait until the 1-minute load is below ``max_load`` (at most ``max_wait`` s).

    Other work on a 2-core machine skews every number; returns the load when starting.
    """
    deadline = time.monotonic() + max_wait
    while True:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        if load < max_load or time.monotonic() >= deadline:
            return load
        time.sleep(5)  # polling the load average, not synchronising with anything


def rss_mib(pid: int) -> float:
    """Resident set size of one process in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_rss_mib(pid: int) -> float:
    """Summed RSS of the children (e.g. qemu-img) of ``pid``, in MiB."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                total += rss_mib(int(entry.name)) + child_rss_mib(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


@contextmanager
def controlplane_process(
    workdir: Path, *extra: str, db: Path | None = None
) -> Iterator[tuple[Cluster, Process]]:
    """A real ``h2k-controlplane`` (plaintext, default logging) on a free loopback port."""
    cluster = Cluster(workdir)
    args = list(extra)
    if db is not None:
        args += ["--db", f"sqlite:///{db}"]  # argparse keeps the last --db
    try:
        proc = cluster.start_controlplane(*args)
        yield cluster, proc
    finally:
        cluster.stop()


def aio_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=[("grpc.so_reuseport", 0)])
