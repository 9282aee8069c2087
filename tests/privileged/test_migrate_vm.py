"""A whole VM migrated through real processes: `h2kctl migrate` of a HyperSDK manifest, a
two-disk guest with /var on its second disk named by device in fstab. Outputs are read back
independently; a failed migration leaves nothing in the output directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from devsupport.cluster import Cluster
from tests.support.guests import PartitionSpec, build_disk, opened_readonly
from tests.support.repair_checks import is_clean, leftovers

EXAMPLE = Path(__file__).resolve().parents[1] / "unit" / "migration" / "data"
RELEASE = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
FSTAB = "/dev/sda1  /     ext4  defaults  0 1\n/dev/sdb1  /var  ext4  defaults  0 2\n"
NETWORK = "VM Network=network:default"


def _disk(target: Path, tree: dict[str, Any]) -> Path:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        build_disk(target, "dos", [PartitionSpec("ext4", 48, tree)], Path(scratch))
    return target


@pytest.fixture(scope="module")
def vm_disks(repair_cluster: Cluster) -> tuple[Path, Path]:
    directory = repair_cluster.input_dir / "web-01"
    directory.mkdir()
    root = {"/etc/os-release": RELEASE, "/etc/fstab": FSTAB, "/var/": "", "/proc/": ""}
    first = _disk(directory / "web-01-disk1.vmdk", root)
    second = _disk(directory / "web-01-disk2.vmdk", {"/log/marker": "on /var\n"})
    return first, second


def _manifest(path: Path, disks: tuple[Path, Path], outdir: Path, name: str) -> Path:
    document = json.loads((EXAMPLE / "vsphere-artifact-manifest.json").read_text())
    document["source"]["vm_name"] = name
    for entry, disk in zip(document["disks"], disks, strict=True):
        entry["local_path"] = str(disk)
        entry["bytes"] = disk.stat().st_size
    document["output"]["directory"] = str(outdir)
    document["pipeline"]["convert"]["compress"] = False
    path.write_text(json.dumps(document, indent=2))
    return path


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_two_disk_vm_arrives_whole_with_its_definitions(
    repair_cluster: Cluster, vm_disks: tuple[Path, Path], outdir: Path, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path / "artifact-manifest.json", vm_disks, outdir, "web-01")
    run = repair_cluster.h2kctl(
        "migrate", str(manifest), "--network", NETWORK, "--watch", timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Output: {outdir / 'web-01.qcow2'}" in run.stdout
    assert _names(outdir) == [
        "web-01-disk-2.qcow2",
        "web-01.kubevirt.yaml",
        "web-01.qcow2",
        "web-01.report.json",
        "web-01.xml",
    ]  # nothing staged, nothing hidden left behind
    # The data disk carries /var: the repair mounted it like a boot would (its superblock's
    # mount time changes), so compare what the guest sees, and check the image.
    check = subprocess.run(
        ["qemu-img", "check", "-f", "qcow2", str(outdir / "web-01-disk-2.qcow2")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    scratch_var, scratch_root = tmp_path / "var", tmp_path / "root"
    scratch_var.mkdir()
    scratch_root.mkdir()
    with opened_readonly(outdir / "web-01-disk-2.qcow2", "qcow2", scratch_var) as var:
        var_uuid = var.blkid[1]["UUID"]
        assert var.read(1, "/log/marker") == "on /var\n"
    with opened_readonly(outdir / "web-01.qcow2", "qcow2", scratch_root) as root:
        root_uuid = root.blkid[1]["UUID"]
        fstab = root.read(1, "/etc/fstab") or ""
    assert f"UUID={root_uuid}" in fstab and f"UUID={var_uuid}" in fstab
    assert "/dev/sd" not in fstab
    xml = (outdir / "web-01.xml").read_text()
    assert "00:50:56:ab:cd:ef" in xml and str(outdir / "web-01.qcow2") in xml
    if shutil.which("virt-xml-validate"):
        check = subprocess.run(
            ["virt-xml-validate", str(outdir / "web-01.xml"), "domain"],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads((outdir / "web-01.report.json").read_text())
    assert [d["disk_id"] for d in report["disks"]] == ["disk-2", "disk-0"]
    assert report["options"]["pipeline.repair"].startswith("the boot disk was repaired")
    # pipeline.inspect.collect_guest_info: the guest as the repair found it (both disks).
    guest = report["disks"][-1]["guest_info"]
    assert (guest["os"]["id"], guest["os"]["version"]) == ("rocky", "9.3")
    fstab = {e["mountpoint"]: e for e in guest["fstab"]}
    assert fstab["/var"]["naming"] == "device" and fstab["/var"]["found_on"]["disk"] == 1
    shown = repair_cluster.h2kctl("migrations", "get", "web-01", "-o", "json", check=True)
    view = json.loads(shown.stdout)
    assert view["state"] == "COMPLETED" and view["disks_done"] == 2
    assert is_clean(repair_cluster.workdir), leftovers(repair_cluster.workdir)


def test_a_migration_whose_disk_is_not_an_image_fails_and_leaves_nothing(
    repair_cluster: Cluster, vm_disks: tuple[Path, Path], outdir: Path, tmp_path: Path
) -> None:
    broken = repair_cluster.input_dir / "web-02-disk2.vmdk"
    broken.write_bytes(b"this is not a vmdk\n" * 100)
    manifest = _manifest(tmp_path / "m.json", (vm_disks[0], broken), outdir, "web-02")
    run = repair_cluster.h2kctl(
        "migrate", str(manifest), "--network", NETWORK, "--watch", timeout=300
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED" in run.stderr and "disk disk-2" in run.stderr
    assert _names(outdir) == []  # no final output, no staged file
    assert vm_disks[0].exists()
    assert is_clean(repair_cluster.workdir), leftovers(repair_cluster.workdir)


def test_bad_manifests_are_refused_by_name_and_nothing_is_sent(
    repair_cluster: Cluster, vm_disks: tuple[Path, Path], outdir: Path, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path / "bad.json", vm_disks, outdir, "web-03")
    document = json.loads(manifest.read_text())
    document["disks"][1]["source_format"] = "iso"
    document["disks"][0]["local_path"] = "/nowhere/disk.vmdk"
    manifest.write_text(json.dumps(document))
    run = repair_cluster.h2kctl("migrate", str(manifest), "--network", NETWORK)
    assert run.returncode == 2
    assert "disks[1].source_format: must be one of vmdk, qcow2, raw, vhd, vhdx, vdi" in run.stderr
    assert "disks[0].local_path" in run.stderr
    unmapped = _manifest(tmp_path / "net.json", vm_disks, outdir, "web-04")
    run = repair_cluster.h2kctl("migrate", str(unmapped))
    assert run.returncode != 0 and "'VM Network' has no mapping" in run.stderr
    listed = json.loads(
        repair_cluster.h2kctl("migrations", "list", "-o", "json", check=True).stdout
    )
    assert "web-03" not in {m["spec"]["migration_id"] for m in listed}
    assert _names(outdir) == []
