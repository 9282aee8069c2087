"""``hyper2kvm MANIFEST`` as HyperSDK runs it (direct mode), real processes throughout: a
two-disk guest with /var on its second disk, through an embedded control plane and agent
(no H2K_SERVER) and through a running cluster (H2K_SERVER). What HyperSDK reads is checked:
the exit status and the first ``Output:`` line on stdout; and that an embedded run leaves no
process and no temporary directory behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from devsupport.cluster import Cluster
from tests.support.guests import PartitionSpec, build_disk
from tests.support.repair_checks import is_clean, leftovers

HYPER2KVM = Path(sys.executable).parent / "hyper2kvm"
EXAMPLE = Path(__file__).resolve().parents[1] / "unit" / "migration" / "data"
RELEASE = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
FSTAB = "/dev/sda1  /     ext4  defaults  0 1\n/dev/sdb1  /var  ext4  defaults  0 2\n"
RUN_SECONDS = 300


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    tmpdir: Path  # the TMPDIR hyper2kvm was given: its embedded servers' home


def _disk(target: Path, tree: dict[str, Any]) -> Path:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        build_disk(target, "dos", [PartitionSpec("ext4", 48, tree)], Path(scratch))
    return target


@pytest.fixture(scope="module")
def vm_disks(repair_cluster: Cluster) -> tuple[Path, Path]:
    # Under the cluster's input directory, so its agent may read them too.
    directory = repair_cluster.input_dir / "web-01"
    directory.mkdir()
    root = {"/etc/os-release": RELEASE, "/etc/fstab": FSTAB, "/var/": "", "/proc/": ""}
    first = _disk(directory / "web-01-disk1.vmdk", root)
    second = _disk(directory / "web-01-disk2.vmdk", {"/log/marker": "on /var\n"})
    return first, second


def _manifest(path: Path, disks: tuple[Path, Path], outdir: Path, **changes: Any) -> Path:
    document = json.loads((EXAMPLE / "vsphere-artifact-manifest.json").read_text())
    for entry, disk in zip(document["disks"], disks, strict=True):
        entry["local_path"] = str(disk)
        entry["bytes"] = disk.stat().st_size
    document["output"]["directory"] = str(outdir)
    document["pipeline"]["convert"]["compress"] = False
    document.update(changes)
    path.write_text(json.dumps(document, indent=2))
    return path


def _env(tmpdir: Path, server: Cluster | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("H2K_")}
    env["TMPDIR"] = str(tmpdir)
    if server is not None:
        env.update(H2K_SERVER=server.address, H2K_INSECURE="1")
    return env


def hyper2kvm(tmp_path: Path, *args: str, server: Cluster | None = None) -> Run:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    done = subprocess.run(
        [str(HYPER2KVM), *args],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        env=_env(tmpdir, server),
    )
    return Run(done.returncode, done.stdout, done.stderr, tmpdir)


def processes_naming(directory: Path) -> list[str]:
    """Live processes whose command line names ``directory`` (the embedded servers do)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("status") != psutil.STATUS_ZOMBIE and any(
            str(directory) in arg for arg in cmd
        ):
            found.append(f"{proc.pid}: {' '.join(cmd)}")
    return found


def assert_nothing_left(run: Run) -> None:
    assert processes_naming(run.tmpdir) == []
    assert list(run.tmpdir.iterdir()) == []  # the embedded servers' directory is gone
    assert is_clean(run.tmpdir), leftovers(run.tmpdir)


def assert_complete_qcow2(path: Path) -> None:
    check = subprocess.run(
        ["qemu-img", "check", "-f", "qcow2", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_embedded_a_two_disk_vm_arrives_and_nothing_is_left_running(
    vm_disks: tuple[Path, Path], tmp_path: Path
) -> None:
    outdir = tmp_path / "out"  # created by hyper2kvm
    manifest = _manifest(tmp_path / "artifact-manifest.json", vm_disks, outdir)
    run = hyper2kvm(tmp_path, str(manifest))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines() == [f"Output: {outdir / 'web-01.qcow2'}"]
    assert_complete_qcow2(outdir / "web-01.qcow2")
    assert_complete_qcow2(outdir / "web-01-disk-2.qcow2")
    assert _names(outdir) == [
        "web-01-disk-2.qcow2",
        "web-01.kubevirt.yaml",
        "web-01.qcow2",
        "web-01.report.json",
        "web-01.xml",
    ]
    report = json.loads((outdir / "web-01.report.json").read_text())
    assert report["options"]["pipeline.repair"].startswith("the boot disk was repaired")
    assert_nothing_left(run)


def test_with_h2k_server_it_uses_that_control_plane_and_a_rerun_attaches(
    repair_cluster: Cluster, vm_disks: tuple[Path, Path], outdir: Path, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path / "artifact-manifest.json", vm_disks, outdir)
    run = hyper2kvm(tmp_path, str(manifest), "-v", server=repair_cluster)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"Output: {outdir / 'web-01.qcow2'}"  # HyperSDK takes the first
    assert f"Output: {outdir / 'web-01-disk-2.qcow2'}" in lines
    assert f"Wrote: {outdir / 'web-01.xml'}" in lines
    assert f"Wrote: {outdir / 'web-01.report.json'}" in lines
    assert_complete_qcow2(outdir / "web-01.qcow2")
    assert "embedded" not in run.stderr
    listed = json.loads(
        repair_cluster.h2kctl("migrations", "list", "-o", "json", check=True).stdout
    )
    ids = [m["spec"]["migration_id"] for m in listed if m["spec"]["vm"]["name"] == "web-01"]
    assert len(ids) == 1 and ids[0].startswith("web-01-")
    again = hyper2kvm(tmp_path, str(manifest), server=repair_cluster)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines() == [f"Output: {outdir / 'web-01.qcow2'}"]
    assert f"attached to migration {ids[0]}" in again.stderr
    assert processes_naming(run.tmpdir) == [] and list(run.tmpdir.iterdir()) == []


def test_dry_run_writes_only_the_report(vm_disks: tuple[Path, Path], tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    manifest = _manifest(tmp_path / "artifact-manifest.json", vm_disks, outdir)
    before = [d.stat().st_mtime_ns for d in vm_disks]
    run = hyper2kvm(tmp_path, str(manifest), "--dry-run")
    assert run.returncode == 0, run.stdout + run.stderr
    report_path = outdir / "web-01.dry-run.report.json"
    assert run.stdout.splitlines() == [f"Wrote: {report_path}"]
    assert _names(outdir) == [report_path.name]
    report = json.loads(report_path.read_text())
    assert report["dry_run"] is True and report["vm"] == "web-01"
    fstab = next(a for a in report["repair"]["actions"] if a["action"] == "fstab_uuid")
    assert fstab["status"] == "would_apply"
    assert [d.stat().st_mtime_ns for d in vm_disks] == before
    assert_nothing_left(run)


def test_a_corrupt_disk_fails_with_the_reason_and_leaves_nothing(
    repair_cluster: Cluster, vm_disks: tuple[Path, Path], tmp_path: Path
) -> None:
    broken = repair_cluster.input_dir / "web-01" / "web-02-disk2.vmdk"
    broken.write_bytes(b"this is not a vmdk\n" * 100)
    outdir = tmp_path / "out"
    manifest = _manifest(tmp_path / "m.json", (vm_disks[0], broken), outdir)
    run = hyper2kvm(tmp_path, str(manifest))
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout == ""
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("hyper2kvm: error: migration web-01-") and "FAILED" in last
    assert "disk disk-2" in last
    assert not (outdir / "web-01.qcow2").exists()
    assert _names(outdir) == []  # no staged file either
    assert_nothing_left(run)


def test_an_invalid_manifest_exits_2_naming_the_field(
    vm_disks: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path / "bad.json", vm_disks, tmp_path / "out")
    document = json.loads(manifest.read_text())
    document["disks"][1]["source_format"] = "iso"
    manifest.write_text(json.dumps(document))
    run = hyper2kvm(tmp_path, str(manifest))
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    assert "disks[1].source_format" in run.stderr
    assert not (tmp_path / "out").exists()
    assert list(run.tmpdir.iterdir()) == []


def test_sigterm_mid_run_stops_everything_and_removes_the_temporary_directory(
    vm_disks: tuple[Path, Path], tmp_path: Path
) -> None:
    outdir = tmp_path / "out"
    manifest = _manifest(tmp_path / "artifact-manifest.json", vm_disks, outdir)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [str(HYPER2KVM), str(manifest)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=_env(tmpdir, None),
        )
    deadline = time.monotonic() + 120
    while "submitted" not in stderr_path.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, stderr_path.read_text()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr_path.read_text()
    assert out == ""
    assert "interrupted" in stderr_path.read_text()
    assert not (outdir / "web-01.qcow2").exists()
    assert_nothing_left(Run(proc.returncode, out, "", tmpdir))
