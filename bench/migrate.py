"""VM migration benchmark: h2k's whole-VM path against the same qemu-img work done by hand.

Two measurements, each h2k way next to its baseline in the same run, every way once per round
in the same order; medians and ranges over the rounds:

1. A two-disk VM (a boot disk and a data disk: VMDKs of random data, devsupport.images'
   write_random_raw; --fill holes: its data-and-holes images) migrated with the guest
   repair off (HyperSDK's pipeline.fix.enabled false: no root, no guest needed), validate off
   and on:
     h2k        `h2kctl migrate manifest.json --watch`, launch to exit: the control plane
                creates the first data disk's job, the other disks' jobs once it is placed
                (with repair off the boot disk is a plain convert, so every disk runs in
                parallel on the agent's two slots), then the publish job (qemu-img check of
                every output, the definitions written, staged names renamed), then COMPLETED
     by hand    the same schedule without h2k: one lane per disk, in parallel, each running
                the agent's exact qemu-img convert command line (agent.disk.qemu_img, so it
                cannot drift) with the agent's early write-back and fsync; validate on: each
                lane then runs `qemu-img compare`, and after every lane `qemu-img check` of
                every output, one after another (as the publish job does)
   h2k's timeline (from the control plane's job records) shows where its extra time goes.
2. An OVA (a tar made with `tar`, the OVF first) holding one streamOptimized VMDK:
     in place   `qemu-img convert` of a json: source whose raw driver reads the member's
                offset/size window of the OVA (agent.disk.qemu_img.source_filename: what the
                agent runs), agent argv + write-back + fsync
     unpack     `tar -xf` of the VMDK, then the same convert of the extracted file
     h2k job    `h2kctl submit --watch` of the convert job a migration makes for that disk
                (parameters.migration source_offset/source_size): the agent's in-place path
   with the disk space each way needs besides the OVA (unpack: the extracted copy too).
   A whole OVA migration through `h2kctl migrate` is not measured: OVA input always asks for
   the guest repair, which needs a real guest disk and root.

Before each way its predecessor's outputs are deleted and `sync` has run; sources stay in the
page cache for every way. Every output is checked equal to its source (qemu-img compare,
outside the timers) in the first round.

    python -m bench.migrate [--quick] [--disk-mib 1024,512] [--fill random|holes] [--ova-gib 2]
                            [--rounds 3] [--only vm|ova]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.protobuf.timestamp_pb2 import Timestamp

from agent.disk.qemu_img import ByteRange, ToolImage, convert_argv, source_filename
from agent.disk.writeback import WRITEBACK_INTERVAL, start_writeback
from bench.common import machine_line, print_table
from bench.convert import build_source, fresh_disk_state
from devsupport.cluster import Cluster, running_cluster
from devsupport.images import VARIANTS, build_image, write_random_raw
from devsupport.specs import job_spec
from migration.ova import ova_members
from protocol.gen.h2k.v1 import migration_pb2

MiB = 1 << 20
MANIFEST = Path(__file__).resolve().parent.parent / "tests/unit/migration/data"
NETWORK = "VM Network=network:default"
VM_NAME = "bench-vm"

Times = dict[str, list[float]]


def seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def load_now() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def allocated_mib(*paths: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in paths if p.exists()) / MiB


def qemu(*argv: str) -> None:
    subprocess.run(["qemu-img", *argv], check=True, stdout=subprocess.DEVNULL)


def agent_convert(src: ToolImage, dst: Path) -> Path:
    """The agent's qemu-img convert command line, its early write-back and its fsync."""
    argv = convert_argv(src, "vmdk", dst, "qcow2", False)
    fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)  # as the agent creates it
    stop = threading.Event()

    def hint() -> None:
        while not stop.wait(WRITEBACK_INTERVAL):
            start_writeback(fd)

    hints = threading.Thread(target=hint, daemon=True)
    try:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        hints.start()
        returncode = child.wait()
        stop.set()
        hints.join()  # no hint may run on a closed descriptor
        if returncode != 0:
            raise subprocess.CalledProcessError(returncode, argv)
        os.fsync(fd)
    finally:
        stop.set()
        os.close(fd)
    return dst


# ---- 1. a two-disk VM ---------------------------------------------------------------------


def build_vm_disks(directory: Path, sizes_mib: list[int], variant: str, fill: str) -> list[Path]:
    """The VM's disks, boot disk first: every byte random (``fill`` "random"), or random
    extents between holes ("holes", devsupport.images.build_image)."""
    if fill == "holes":
        return [
            build_image(directory, variant, size * MiB, stem=f"{VM_NAME}-disk{i}").path
            for i, size in enumerate(sizes_mib)
        ]
    driver, options, _ = VARIANTS[variant]
    directory.mkdir(parents=True, exist_ok=True)
    disks = []
    for i, size in enumerate(sizes_mib):
        raw, disk = directory / f".disk{i}.raw", directory / f"{VM_NAME}-disk{i}.vmdk"
        write_random_raw(raw, size)
        qemu("convert", "-f", "raw", "-O", driver, "-o", options or "", str(raw), str(disk))
        raw.unlink()
        disks.append(disk)
    return disks


def write_manifest(path: Path, disks: list[Path], outdir: Path, validate: bool) -> Path:
    """HyperSDK's Artifact Manifest v1 for ``disks``: repair off, no compression."""
    document = json.loads((MANIFEST / "vsphere-artifact-manifest.json").read_text())
    document["source"]["vm_name"] = VM_NAME
    entries = []
    for i, disk in enumerate(disks):
        entry: dict[str, Any] = {
            "id": f"disk-{i}",
            "source_format": "vmdk",
            "bytes": disk.stat().st_size,
            "local_path": str(disk),
            "disk_type": "boot" if i == 0 else "data",
        }
        if i:
            entry["boot_order_hint"] = i
        entries.append(entry)
    document["disks"] = entries
    document["pipeline"]["fix"]["enabled"] = False
    document["pipeline"]["convert"]["compress"] = False
    document["pipeline"]["validate"]["enabled"] = validate
    document["output"]["directory"] = str(outdir)
    path.write_text(json.dumps(document, indent=2))
    return path


def by_hand_vm(
    disks: list[Path], outdir: Path, validate: bool, parallel: bool = True
) -> list[Path]:
    """h2k's schedule without h2k: a lane per disk in parallel (or, for reference, one lane
    after the other), then the checks in order."""

    def lane(disk: Path) -> Path:
        output = agent_convert(disk, outdir / f"{disk.stem}.qcow2")
        if validate:
            qemu("compare", "-p", "-f", "vmdk", "-F", "qcow2", str(disk), str(output))
        return output

    with ThreadPoolExecutor(len(disks) if parallel else 1) as pool:
        outputs = list(pool.map(lane, disks))
    if validate:
        for output in outputs:
            qemu("check", "-f", "qcow2", "--output=json", str(output))
    return outputs


class H2kMigration:
    """`h2kctl migrate --watch` of one manifest per call; keeps each run's timeline."""

    def __init__(self, cluster: Cluster, disks: list[Path], validate: bool) -> None:
        self.cluster, self.disks, self.validate = cluster, disks, validate
        self.timelines: list[dict[str, float]] = []
        self.states: list[str] = []
        self._count = 0

    def __call__(self, outdir: Path) -> list[Path]:
        self._count += 1
        mid = f"{VM_NAME}-v{int(self.validate)}-{self._count}"
        manifest = write_manifest(outdir.parent / f"{mid}.json", self.disks, outdir, self.validate)
        launched = time.time()
        run = self.cluster.h2kctl(
            "migrate", str(manifest), "--id", mid, "--network", NETWORK, "--watch", timeout=3600
        )
        exited = time.time()
        if run.returncode != 0:
            raise RuntimeError(f"h2kctl migrate failed:\n{run.stdout}{run.stderr}")
        self.timelines.append(self._timeline(mid, launched, exited))
        return [Path(p) for p in self._outputs(mid) if p.endswith(".qcow2")]

    def _outputs(self, mid: str) -> list[str]:
        with self.cluster.client() as client:
            return list(client.get_migration(mid).outputs)

    def _timeline(self, mid: str, launched: float, exited: float) -> dict[str, float]:
        """Seconds from h2kctl's launch to each job's creation, start and end, and more."""
        with self.cluster.client() as client:
            m = client.get_migration(mid)
            state = migration_pb2.MigrationState.Name(m.state).removeprefix("MIGRATION_STATE_")
            self.states.append(f"h2k migration {mid}: {state}")
            events = {"migration submitted": seconds(m.submitted_at) - launched}
            for j in m.jobs:
                job = client.get(j.job_id)
                name = f"{j.role} {j.disk_id}".strip()
                events[f"{name} created"] = seconds(job.submitted_at) - launched
                events[f"{name} started"] = seconds(job.started_at) - launched
                events[f"{name} finished"] = seconds(job.finished_at) - launched
            events["migration COMPLETED"] = seconds(m.finished_at) - launched
        events["h2kctl exit"] = exited - launched
        return events


def measure_vm(cluster: Cluster, disks: list[Path], args: argparse.Namespace) -> None:
    scratch = cluster.output_dir
    ways: dict[str, Callable[[Path], list[Path]]] = {}
    h2k: dict[bool, H2kMigration] = {}
    for validate in (False, True):
        label = f"validate {'on' if validate else 'off'}"
        ways[f"by hand, {label}"] = functools.partial(by_hand_vm, disks, validate=validate)
        serial = functools.partial(by_hand_vm, disks, validate=validate, parallel=False)
        ways[f"by hand one disk after the other, {label}"] = serial
        h2k[validate] = H2kMigration(cluster, disks, validate)
        ways[f"h2k migrate, {label}"] = h2k[validate]
    times: Times = defaultdict(list)
    loads = []
    for round_no in range(args.rounds):
        loads.append(load_now())
        for name, way in ways.items():
            outdir = scratch / f"r{round_no}-{name.replace(' ', '').replace(',', '-')}"
            outdir.mkdir()
            fresh_disk_state(False)
            start = time.perf_counter()
            outputs = way(outdir)
            times[name].append(time.perf_counter() - start)
            if round_no == 0:
                check_outputs(disks, outputs)
            shutil.rmtree(outdir)
    report_vm(times, loads, h2k, args)


def check_outputs(disks: list[Path], outputs: list[Path]) -> None:
    """Each disk's output holds the same guest data (outputs: in any order, one per disk)."""
    by_stem = {}
    for output in outputs:
        by_stem[output.stem] = output
    for i, disk in enumerate(disks):
        # by hand: <disk stem>.qcow2; h2k: <vm>.qcow2 (boot) and <vm>-disk-<i>.qcow2
        output = by_stem.get(disk.stem) or by_stem[VM_NAME if i == 0 else f"{VM_NAME}-disk-{i}"]
        qemu("compare", "-q", "-f", "vmdk", "-F", "qcow2", str(disk), str(output))


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def report_vm(
    times: Times,
    loads: list[float],
    h2k: dict[bool, H2kMigration],
    args: argparse.Namespace,
) -> None:
    medians = {name: statistics.median(v) for name, v in times.items()}
    rows = []
    for name, median in medians.items():
        baseline = medians["by hand, " + name.rsplit(", ", 1)[1]]
        rows.append([name, median, spread(times[name]), f"{median / baseline:.2f}x"])
    sizes = " + ".join(f"{int(s)} MiB" for s in args.disk_mib.split(","))
    loads_text = ", ".join(f"{load:.1f}" for load in loads)
    print_table(
        f"two-disk VM ({sizes} VMDK {args.variant}, {args.fill} data) -> qcow2, repair off, "
        f"{args.rounds} rounds; "
        f"1-min load at each round's start: {loads_text}; {machine_line()}",
        ["way", "median s", "range s", "time vs by hand"],
        rows,
    )
    print("\nevery output equals its source (qemu-img compare)")
    for validate, way in h2k.items():
        keys = list(way.timelines[0])
        timeline = {k: statistics.median(t[k] for t in way.timelines) for k in keys}
        text = ", ".join(f"{k} {v:.2f}" for k, v in sorted(timeline.items(), key=lambda kv: kv[1]))
        print(f"\nh2k timeline, validate {'on' if validate else 'off'} (medians, s from launch): ")
        print(text)
        print("\n".join(way.states))


# ---- 2. an OVA ----------------------------------------------------------------------------

OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:href="{disk}" ovf:id="file1" ovf:size="{size}"/></References>
  <DiskSection><Info>Virtual disks</Info>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="{name}"><Info>A virtual machine</Info><Name>{name}</Name>
  </VirtualSystem>
</Envelope>
"""


def build_ova(directory: Path, size: int, data_fraction: float) -> tuple[Path, str, ByteRange]:
    """An OVA made with tar (OVF first) around one streamOptimized VMDK; its member's range."""
    work = directory / "ova-build"
    work.mkdir()
    vmdk = build_source(work, size, data_fraction, "streamOptimized")
    disk = f"{VM_NAME}-disk1.vmdk"
    vmdk.rename(work / disk)
    ovf = OVF.format(disk=disk, size=(work / disk).stat().st_size, capacity=size, name=VM_NAME)
    (work / f"{VM_NAME}.ovf").write_text(ovf)
    ova = directory / f"{VM_NAME}.ova"
    subprocess.run(["tar", "-cf", str(ova), "-C", str(work), f"{VM_NAME}.ovf", disk], check=True)
    shutil.rmtree(work)
    with ova.open("rb") as handle:

        def read(offset: int, length: int) -> bytes:
            handle.seek(offset)
            return handle.read(length)

        member = ova_members(read)[disk]
    return ova, disk, ByteRange(member.offset, member.size)


class OvaWays:
    """The three ways of one OVA; each returns its output and the disk space it used."""

    def __init__(self, cluster: Cluster, ova: Path, member: str, window: ByteRange) -> None:
        self.cluster, self.ova, self.member, self.window = cluster, ova, member, window
        self.h2k_phases: list[dict[str, float]] = []
        self._count = 0

    def in_place(self, outdir: Path) -> tuple[Path, float]:
        output = agent_convert(source_filename(self.ova, self.window), outdir / "disk.qcow2")
        return output, allocated_mib(output)

    def unpack(self, outdir: Path) -> tuple[Path, float]:
        subprocess.run(["tar", "-xf", str(self.ova), "-C", str(outdir), self.member], check=True)
        extracted = outdir / self.member
        output = agent_convert(extracted, outdir / "disk.qcow2")
        used = allocated_mib(extracted, output)
        extracted.unlink()
        return output, used

    def h2k_job(self, outdir: Path) -> tuple[Path, float]:
        self._count += 1
        migration = {
            "migration_id": f"{VM_NAME}-ova",
            "disk_id": "vmdisk1",
            "output_name": "disk.qcow2",
            "source_offset": self.window.offset,
            "source_size": self.window.size,
        }
        parameters = {"output_format": "qcow2", "compress": False, "migration": migration}
        doc = job_spec(image=self.ova, output=outdir, parameters=parameters)
        doc["job_id"] = f"ova-{self._count}"
        launched = time.time()
        self.cluster.h2kctl("submit", str(self.cluster.write_job(doc)), "--watch", check=True)
        exited = time.time()
        with self.cluster.client() as client:
            job = client.get(doc["job_id"])
        self.h2k_phases.append(
            {
                "CLI start + submit": seconds(job.submitted_at) - launched,
                "dispatch": seconds(job.started_at) - seconds(job.submitted_at),
                "job (inspect, convert, fsync, rename)": seconds(job.finished_at)
                - seconds(job.started_at),
                "to CLI exit": exited - seconds(job.finished_at),
            }
        )
        output = outdir / "disk.qcow2"
        return output, allocated_mib(output)


def measure_ova(cluster: Cluster, args: argparse.Namespace) -> None:
    size = int(args.ova_gib * (1 << 30))
    ova, member, window = build_ova(cluster.input_dir, size, args.ova_data_fraction)
    source = source_filename(ova, window)
    ways = OvaWays(cluster, ova, member, window)
    named: dict[str, Callable[[Path], tuple[Path, float]]] = {
        "in place: qemu-img convert json: raw offset/size": ways.in_place,
        "unpack: tar -xf, then qemu-img convert": ways.unpack,
        "h2k convert job of the member (h2kctl submit)": ways.h2k_job,
    }
    times: Times = defaultdict(list)
    space: dict[str, float] = {}
    loads = []
    for round_no in range(args.rounds):
        loads.append(load_now())
        for name, way in named.items():
            outdir = cluster.output_dir / f"ova-r{round_no}-{len(times[name])}-{name[:5]}"
            outdir.mkdir()
            fresh_disk_state(False)
            start = time.perf_counter()
            output, space[name] = way(outdir)
            times[name].append(time.perf_counter() - start)
            if round_no == 0:
                qemu("compare", "-q", "-f", "vmdk", "-F", "qcow2", str(source), str(output))
            shutil.rmtree(outdir)
    report_ova(times, space, loads, ova, window, ways, args)
    ova.unlink()


def report_ova(
    times: Times,
    space: dict[str, float],
    loads: list[float],
    ova: Path,
    window: ByteRange,
    ways: OvaWays,
    args: argparse.Namespace,
) -> None:
    medians = {name: statistics.median(v) for name, v in times.items()}
    base = next(iter(medians.values()))
    rows = [
        [name, median, spread(times[name]), f"{median / base:.2f}x", space[name]]
        for name, median in medians.items()
    ]
    loads_text = ", ".join(f"{load:.1f}" for load in loads)
    print_table(
        f"OVA ({ova.stat().st_size / MiB:.0f} MiB; streamOptimized VMDK member of "
        f"{window.size / MiB:.0f} MiB, {args.ova_gib:g} GiB virtual) -> qcow2, {args.rounds} "
        f"rounds; 1-min load at each round's start: {loads_text}; {machine_line()}",
        ["way", "median s", "range s", "time vs in place", "disk space used MiB"],
        rows,
    )
    phases = {k: statistics.median(p[k] for p in ways.h2k_phases) for k in ways.h2k_phases[0]}
    print("\nh2k job phases (medians, s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    print("every output equals the OVA's disk (qemu-img compare)")


QUICK = ["--disk-mib", "256,128", "--ova-gib", "0.25", "--rounds", "1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.migrate", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small disks, 1 round")
    parser.add_argument("--disk-mib", default="1024,512", help="disk sizes, boot disk first")
    parser.add_argument("--variant", default="vmdk-monolithicSparse")
    parser.add_argument(
        "--fill", choices=["random", "holes"], default="random", help="the VM disks' content"
    )
    parser.add_argument("--ova-gib", type=float, default=2.0, help="the OVA disk's virtual size")
    parser.add_argument("--ova-data-fraction", type=float, default=0.6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["vm", "ova"], default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args([*QUICK, *raw] if "--quick" in raw else raw)

    work = Path(tempfile.mkdtemp(prefix="h2k-bench-", dir=args.workdir))
    try:
        with running_cluster(work) as cluster:
            if args.only in (None, "vm"):
                sizes = [int(s) for s in args.disk_mib.split(",")]
                disks = build_vm_disks(cluster.input_dir / VM_NAME, sizes, args.variant, args.fill)
                measure_vm(cluster, disks, args)
            if args.only in (None, "ova"):
                measure_ova(cluster, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
