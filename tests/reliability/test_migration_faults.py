"""Faults during a whole-VM migration, on real processes: an agent killed mid-disk, a cancel
mid-repair, a control plane killed mid-migration, a disk that can never convert.

The VM has three disks (boot ``/``, ``/var``, ``/srv``), built once per module; the boot and
``/srv`` disks carry incompressible ballast so their compressed conversions take seconds and
there is time to act while they run. Each test has a fresh cluster (``faults``); the disks are
hard-linked into its input directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from devsupport.cluster import wait_for
from protocol.gen.h2k.v1 import job_pb2, migration_pb2
from tests.support.faults import FaultCluster, history, state, temporary_files
from tests.support.guests import PartitionSpec, build_disk
from tests.support.host import missing_for_privileged
from tests.support.repair_checks import is_clean, leftovers

MISSING = missing_for_privileged()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

EXAMPLE = Path(__file__).resolve().parents[1] / "unit" / "migration" / "data"
RELEASE = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
FSTAB = (
    "/dev/sda1  /     ext4  defaults  0 1\n"
    "/dev/sdb1  /var  ext4  defaults  0 2\n"
    "/dev/sdc1  /srv  ext4  defaults  0 2\n"
)
NETWORK = "VM Network=network:default"
BALLAST_MIB = 160
MiB = 1 << 20
TERMINAL_MIGRATION = ("COMPLETED", "FAILED", "CANCELLED")


def _disk(target: Path, tree: dict[str, Any], size_mib: int) -> Path:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        build_disk(target, "dos", [PartitionSpec("ext4", size_mib, tree)], Path(scratch))
    return target


@pytest.fixture(scope="module")
def vm_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """boot (``/``, slow), var (small), srv (slow), and two VMDKs cut short (bad-*)."""
    directory = tmp_path_factory.mktemp("vm-disks")
    root = {
        "/etc/os-release": RELEASE,
        "/etc/fstab": FSTAB,
        "/var/": "",
        "/srv/": "",
        "/proc/": "",
        "/opt/ballast.bin": os.urandom(BALLAST_MIB * MiB),
    }
    images = {
        "boot": _disk(directory / "boot.vmdk", root, BALLAST_MIB + 48),
        "var": _disk(directory / "var.vmdk", {"/log/marker": "on /var\n"}, 48),
        "srv": _disk(
            directory / "srv.vmdk",
            {"/www/marker": "on /srv\n", "/ballast.bin": os.urandom(BALLAST_MIB * MiB)},
            BALLAST_MIB + 48,
        ),
    }
    # Downloads cut short: inside the header, and halfway through the grains.
    images["bad-header"] = directory / "bad-header.vmdk"
    images["bad-header"].write_bytes(images["var"].read_bytes()[:40])
    images["bad-data"] = directory / "bad-data.vmdk"
    whole = images["srv"].read_bytes()
    images["bad-data"].write_bytes(whole[: len(whole) // 2])
    return images


def _manifest(c: FaultCluster, images: dict[str, Path], name: str, disks: list[str]) -> Path:
    """An Artifact Manifest of VM ``name`` whose disks are ``images[d]`` (the first boots),
    compressed qcow2 output into ``output/<name>``; the images are hard-linked into input."""
    inputs = c.input_dir / name
    inputs.mkdir()
    document = json.loads((EXAMPLE / "vsphere-artifact-manifest.json").read_text())
    document["source"]["vm_name"] = name
    template = document["disks"]
    entries = []
    for index, key in enumerate(disks):
        linked = inputs / f"{name}-{key}.vmdk"
        os.link(images[key], linked)
        entry = dict(template[min(index, 1)], id=f"disk-{index if index == 0 else index + 1}")
        entry.update(local_path=str(linked), bytes=linked.stat().st_size)
        entries.append(entry)
    document["disks"] = entries
    document["output"]["directory"] = str(c.output_dir / name)
    document["pipeline"]["convert"]["compress"] = True
    path = c.workdir / f"{name}.manifest.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def _migrate(c: FaultCluster, images: dict[str, Path], name: str, disks: list[str]) -> Path:
    """Start a cluster with one agent and submit the migration; returns its output dir."""
    c.start_controlplane()
    c.start_agent("node-1")
    manifest = _manifest(c, images, name, disks)
    outdir = c.output_dir / name
    outdir.mkdir()
    c.h2kctl("migrate", str(manifest), "--network", NETWORK, check=True)
    return outdir


def _mstate(m: migration_pb2.Migration) -> str:
    return migration_pb2.MigrationState.Name(m.state).removeprefix("MIGRATION_STATE_")


def _wait_migration(
    c: FaultCluster, mid: str, wanted: str, timeout: float = 300
) -> migration_pb2.Migration:
    """Poll until the migration ends; fails at once when it ends other than ``wanted``."""

    def ended() -> migration_pb2.Migration | None:
        m = c.api.get_migration(mid)
        return m if _mstate(m) in TERMINAL_MIGRATION else None

    m = wait_for(ended, timeout=timeout, interval=0.2, what=f"migration {mid} {wanted}")
    assert _mstate(m) == wanted, f"{mid} ended {_mstate(m)}: {m.reason}"
    return m


def _wait_job(c: FaultCluster, job_id: str, timeout: float = 120) -> job_pb2.Job:
    """Poll until the job exists and is terminal (``wait_state`` retries a failed assertion
    until its deadline; this returns at once)."""

    def ended() -> job_pb2.Job | None:
        job = c.job(job_id)
        return job if state(job) in ("COMPLETED", "FAILED", "CANCELLED") else None

    return wait_for(ended, timeout=timeout, interval=0.1, what=f"{job_id} terminal")


def _job_exists(c: FaultCluster, job_id: str) -> bool:
    return any(j.spec.job_id == job_id for j in c.api.list(page_size=1000))


def _running(c: FaultCluster, job_id: str, percent: float = 10) -> job_pb2.Job:
    """Wait (once it exists) for ``job_id`` to pass ``percent`` on node-1."""

    def far_enough() -> job_pb2.Job | None:
        job = c.job(job_id)  # NotFound until the driver made it: polled again
        done = state(job) in ("COMPLETED", "FAILED", "CANCELLED")
        return job if done or job.progress_percent >= percent else None

    job = wait_for(far_enough, timeout=120, interval=0.05, what=f"{job_id} at {percent}%")
    assert state(job) not in ("COMPLETED", "FAILED", "CANCELLED"), f"{job_id} ended too early"
    assert job.assigned_agent == "node-1", job.assigned_agent
    return job


def _qemu_img_check(path: Path) -> None:
    run = subprocess.run(
        ["qemu-img", "check", "-f", "qcow2", str(path)], capture_output=True, text=True
    )
    assert run.returncode == 0, f"{path}: {run.stdout}{run.stderr}"


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _assert_published(c: FaultCluster, m: migration_pb2.Migration, outdir: Path) -> None:
    """Every output at its final name and valid; nothing staged, hidden or attached."""
    finals = sorted(Path(p).name for p in m.outputs)
    assert len(finals) == 6, finals  # 3 disks, 2 definitions, the report
    assert _names(outdir) == finals, "staged or temporary files left behind"
    for name in finals:
        if name.endswith(".qcow2"):
            _qemu_img_check(outdir / name)
    assert not temporary_files(c.workdir), temporary_files(c.workdir)
    assert is_clean(c.workdir), leftovers(c.workdir)


def _assert_nothing_left(c: FaultCluster, m: migration_pb2.Migration, outdir: Path) -> None:
    """Every job terminal, nothing at a final path, nothing staged, nothing attached."""
    made = {j.spec.job_id: j for j in c.api.list(page_size=1000)}
    for entry in m.jobs:
        if entry.job_id in made:  # a later stage's job may never have been made
            job = made[entry.job_id]
            assert state(job) in ("COMPLETED", "FAILED", "CANCELLED"), (entry.job_id, state(job))
        if entry.output_path:
            assert not Path(entry.output_path).exists(), entry.output_path
    assert _names(outdir) == [], "the cleanup left staged outputs"
    assert is_clean(c.workdir), leftovers(c.workdir)


# --- the tests ------------------------------------------------------------------------


def test_agent_killed_during_the_second_disk_retries_it_and_the_vm_arrives_whole(
    faults: FaultCluster, vm_images: dict[str, Path]
) -> None:
    mid = "vm-killed"
    outdir = _migrate(faults, vm_images, mid, ["boot", "var", "srv"])
    first, second = f"{mid}.disk.disk-2", f"{mid}.disk.disk-3"
    assert state(_wait_job(faults, first)) == "COMPLETED", faults.job(first).result.error
    _running(faults, second)
    faults.agents["node-1"].kill()
    faults.restart_agent("node-1")
    m = _wait_migration(faults, mid, "COMPLETED")
    job = faults.job(second)
    if job.attempt > 1:  # retried (retry_count 1, idempotent), not re-attached
        retrying = [h for h in history(job) if h[0] == "RETRYING"]
        assert len(retrying) == 1 and "node-1" in retrying[0][1], history(job)
    assert job.attempt <= 2, history(job)
    assert faults.job(first).attempt == 1
    _assert_published(faults, m, outdir)


# The repair job's phases while the disks are attached (agent/repair/phases.py).
ATTACHED_PHASES = ("attach", "detect", "fsck", "mount")


def _in_phase(c: FaultCluster, job_id: str, phases: tuple[str, ...]) -> job_pb2.Job:
    def there() -> job_pb2.Job | None:
        job = c.job(job_id)
        done = state(job) in ("COMPLETED", "FAILED", "CANCELLED")
        return job if done or job.phase in phases else None

    job = wait_for(there, timeout=120, interval=0.02, what=f"{job_id} in {phases}")
    assert state(job) not in ("COMPLETED", "FAILED", "CANCELLED"), f"{job_id} ended too early"
    return job


@pytest.mark.parametrize("phase", ["convert", "attached"])
def test_cancel_during_the_repair_ends_cancelled_and_leaves_nothing(
    faults: FaultCluster, vm_images: dict[str, Path], phase: str
) -> None:
    mid = f"vm-cancelled-{phase}"
    outdir = _migrate(faults, vm_images, mid, ["boot", "var", "srv"])
    repair = f"{mid}.disk.disk-0"
    if phase == "convert":  # the boot disk is being converted: h2kctl has time to start
        _running(faults, repair, percent=5)
        faults.h2kctl("migrations", "cancel", mid, check=True)
    else:  # the data disks' outputs and the boot disk are attached: cancel at once
        _in_phase(faults, repair, ATTACHED_PHASES)
        faults.api.cancel_migration(mid, "cancelled while attached")
    m = _wait_migration(faults, mid, "CANCELLED", timeout=120)
    assert m.cancel_requested
    cleanup = faults.job(f"{mid}.cleanup")
    assert state(cleanup) == "COMPLETED", cleanup.result.error.message
    job = faults.job(repair)
    assert state(job) == "CANCELLED", (job.phase, history(job))
    assert not _job_exists(faults, f"{mid}.publish")
    _assert_nothing_left(faults, m, outdir)


def test_controlplane_killed_mid_migration_continues_it_once(
    faults: FaultCluster, vm_images: dict[str, Path]
) -> None:
    mid = "vm-cp-restart"
    outdir = _migrate(faults, vm_images, mid, ["boot", "var", "srv"])
    _running(faults, f"{mid}.disk.disk-3")
    faults.controlplane.kill()  # type: ignore[union-attr]
    faults.restart_controlplane()
    m = _wait_migration(faults, mid, "COMPLETED")
    states = [migration_pb2.MigrationState.Name(t.to_state) for t in m.history]
    assert [s.removeprefix("MIGRATION_STATE_") for s in states] == [
        "QUEUED",
        "RUNNING",
        "COMPLETED",
    ], states
    ids = [j.spec.job_id for j in faults.api.list(page_size=1000)]
    assert len(ids) == len(set(ids)), ids
    expected = {f"{mid}.disk.disk-{n}" for n in (0, 2, 3)} | {f"{mid}.publish"}
    assert set(ids) == expected, ids
    for job_id in ids:
        assert faults.job(job_id).attempt == 1, (job_id, history(faults.job(job_id)))
    _assert_published(faults, m, outdir)


@pytest.mark.parametrize("cut", ["header", "data"])
def test_a_data_disk_that_cannot_convert_fails_the_vm_naming_it(
    faults: FaultCluster, vm_images: dict[str, Path], cut: str
) -> None:
    mid = f"vm-truncated-{cut}"
    outdir = _migrate(faults, vm_images, mid, ["boot", "srv", f"bad-{cut}"])
    m = _wait_migration(faults, mid, "FAILED", timeout=120)
    assert "disk disk-3" in m.reason, m.reason
    assert state(faults.job(f"{mid}.disk.disk-3")) == "FAILED"
    sibling = state(faults.job(f"{mid}.disk.disk-2"))
    assert sibling in ("CANCELLED", "COMPLETED"), sibling
    assert not _job_exists(faults, f"{mid}.publish")
    _assert_nothing_left(faults, m, outdir)
