"""A whole VM migrated from an OVA through real processes: `h2kctl migrate web.ova` of a
two-disk guest exported as vSphere does (an OVF in VMware's dialect, streamOptimized VMDKs,
descriptor first in a plain tar). The disks are read in place, at their offsets in the OVA:
nothing is unpacked. OVAs that name a missing file or carry a DTD are refused before anything
is submitted."""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from devsupport.cluster import Cluster
from tests.support.guests import PartitionSpec, build_disk, opened_readonly
from tests.support.ova import OvfDisk, pack_ova, stream_optimized, vmware_ovf
from tests.support.repair_checks import is_clean, leftovers

RELEASE = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
FSTAB = "/dev/sda1  /     ext4  defaults  0 1\n/dev/sdb1  /var  ext4  defaults  0 2\n"
NETWORK = "VM Network=network:default"
MAC = "00:50:56:ab:cd:ef"


@dataclass(frozen=True)
class Exported:
    """The streamOptimized disks of the guest, in a directory outside the cluster's."""

    directory: Path
    disks: list[OvfDisk]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    directory = tmp_path_factory.mktemp("export")
    trees = [
        {"/etc/os-release": RELEASE, "/etc/fstab": FSTAB, "/var/": "", "/proc/": ""},
        {"/log/marker": "on /var\n"},
    ]
    disks = []
    for number, tree in enumerate(trees, 1):
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            sparse = Path(scratch) / "sparse.vmdk"
            build_disk(sparse, "dos", [PartitionSpec("ext4", 48, tree)], Path(scratch))
            disks.append(stream_optimized(sparse, directory / f"web-disk{number}.vmdk"))
    return Exported(directory, disks)


def _ova(cluster: Cluster, exported: Exported, name: str, descriptor: str) -> Path:
    return pack_ova(
        cluster.input_dir / f"{name}.ova",
        exported.directory,
        f"{name}.ovf",
        descriptor,
        [d.file_name for d in exported.disks],
    )


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _submitted(cluster: Cluster) -> set[str]:
    listed = json.loads(cluster.h2kctl("migrations", "list", "-o", "json", check=True).stdout)
    return {m["spec"]["migration_id"] for m in listed}


def _no_unpacked_disk(cluster: Cluster, exported: Exported, ova: Path) -> None:
    """No VMDK, and no file the size of a packed VMDK, under the cluster's directories
    (input, output, the agent's state directory)."""
    sizes = {d.file_bytes for d in exported.disks}
    for path in cluster.workdir.rglob("*"):
        if not path.is_file() or path.is_symlink() or path == ova:
            continue
        assert path.suffix.lower() != ".vmdk", f"{path}: an unpacked disk"
        assert path.stat().st_size not in sizes, f"{path}: the size of a packed disk"


def test_an_ova_migrates_with_its_disks_read_in_place(
    repair_cluster: Cluster, exported: Exported, outdir: Path, tmp_path: Path
) -> None:
    ova = _ova(repair_cluster, exported, "web", vmware_ovf("web", exported.disks, mac=MAC.upper()))
    with tarfile.open(ova) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == ["web.ovf", "web-disk1.vmdk", "web-disk2.vmdk"]
        offsets = {m.name: m.offset_data for m in members}
    run = repair_cluster.h2kctl(
        "migrate", str(ova), "--output-dir", str(outdir), "--network", NETWORK, "--watch",
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "COMPLETED" in run.stderr
    assert f"Output: {outdir / 'web.qcow2'}" in run.stdout
    assert _names(outdir) == [
        "web-vmdisk2.qcow2",
        "web.kubevirt.yaml",
        "web.qcow2",
        "web.report.json",
        "web.xml",
    ]  # nothing staged, nothing hidden left behind

    # Read in place: each disk job read its member's byte range of the OVA itself.
    for disk_id, member in (("vmdisk1", "web-disk1.vmdk"), ("vmdisk2", "web-disk2.vmdk")):
        shown = repair_cluster.h2kctl("get", f"web.disk.{disk_id}", "-o", "json", check=True)
        job = json.loads(shown.stdout)
        assert job["state"] == "COMPLETED"
        assert job["spec"]["image"]["path"] == str(ova.resolve())
        migration = job["spec"]["parameters"]["migration"]
        assert migration["source_offset"] > 0
        assert migration["source_offset"] == offsets[member]
        assert migration["source_size"] == exported.disks[int(disk_id[-1]) - 1].file_bytes
    _no_unpacked_disk(repair_cluster, exported, ova)
    assert _names(repair_cluster.input_dir) == ["web.ova"]

    for image in ("web.qcow2", "web-vmdisk2.qcow2"):
        check = subprocess.run(
            ["qemu-img", "check", "-f", "qcow2", str(outdir / image)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
    scratch_var, scratch_root = tmp_path / "var", tmp_path / "root"
    scratch_var.mkdir()
    scratch_root.mkdir()
    with opened_readonly(outdir / "web-vmdisk2.qcow2", "qcow2", scratch_var) as var:
        var_uuid = var.blkid[1]["UUID"]
        assert var.read(1, "/log/marker") == "on /var\n"
    with opened_readonly(outdir / "web.qcow2", "qcow2", scratch_root) as root:
        root_uuid = root.blkid[1]["UUID"]
        fstab = root.read(1, "/etc/fstab") or ""
    assert f"UUID={root_uuid}" in fstab and f"UUID={var_uuid}" in fstab
    assert "/dev/sd" not in fstab

    xml = (outdir / "web.xml").read_text()
    assert MAC in xml and str(outdir / "web.qcow2") in xml
    assert str(outdir / "web-vmdisk2.qcow2") in xml
    validated = subprocess.run(
        ["virt-xml-validate", str(outdir / "web.xml"), "domain"], capture_output=True, text=True
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    report = json.loads((outdir / "web.report.json").read_text())
    assert report["input"]["kind"] == "ova"
    assert [d["disk_id"] for d in report["disks"]] == ["vmdisk2", "vmdisk1"]
    assert report["vm"]["cpus"] == 1 and report["vm"]["memory_mib"] == 512
    assert report["vm"]["nics"] == [{"id": "nic-0", "mac": MAC, "network": "VM Network"}]
    view = json.loads(
        repair_cluster.h2kctl("migrations", "get", "web", "-o", "json", check=True).stdout
    )
    assert view["state"] == "COMPLETED" and view["disks_done"] == 2
    assert is_clean(repair_cluster.workdir), leftovers(repair_cluster.workdir)


def test_an_ova_naming_a_file_it_does_not_hold_is_refused(
    repair_cluster: Cluster, exported: Exported, outdir: Path
) -> None:
    missing = OvfDisk("web-disk3.vmdk", 4096, 1 << 20)
    descriptor = vmware_ovf("web-missing", [*exported.disks, missing])
    ova = _ova(repair_cluster, exported, "web-missing", descriptor)
    run = repair_cluster.h2kctl(
        "migrate", str(ova), "--output-dir", str(outdir), "--network", NETWORK
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert (
        f"{ova}: web-missing.ovf: References/File[ovf:id=file3]: ovf:href 'web-disk3.vmdk'"
        " is not among the files given" in run.stderr
    )
    assert "web-missing" not in _submitted(repair_cluster)
    assert _names(outdir) == []


@pytest.mark.parametrize(
    "prolog, named",
    [
        ('\n<!DOCTYPE Envelope [<!ENTITY vendor "VMware">]>', "a DTD (<!DOCTYPE>)"),
        ('\n<!DOCTYPE Envelope SYSTEM "http://example.invalid/ovf.dtd">', "a DTD (<!DOCTYPE>)"),
    ],
    ids=["internal-entity", "external-dtd"],
)
def test_an_ova_whose_descriptor_has_a_dtd_is_refused(
    repair_cluster: Cluster, exported: Exported, outdir: Path, prolog: str, named: str
) -> None:
    descriptor = vmware_ovf("web-dtd", exported.disks, prolog=prolog)
    ova = _ova(repair_cluster, exported, "web-dtd", descriptor)
    run = repair_cluster.h2kctl(
        "migrate", str(ova), "--output-dir", str(outdir), "--network", NETWORK
    )
    assert run.returncode == 2, run.stdout + run.stderr
    # The OVA, and the member in it, come first: a wave reads several inputs.
    assert f"{ova}: web-dtd.ovf: descriptor: {named} is not allowed" in run.stderr
    assert "web-dtd" not in _submitted(repair_cluster)
    assert _names(outdir) == []


def test_a_bare_ovf_with_an_entity_is_refused(
    repair_cluster: Cluster, exported: Exported, outdir: Path
) -> None:
    descriptor = vmware_ovf(
        "web-entity", exported.disks, prolog='\n<!DOCTYPE Envelope [<!ENTITY x "y">]>'
    )
    ovf = exported.directory / "web-entity.ovf"
    ovf.write_text(descriptor)
    run = repair_cluster.h2kctl(
        "migrate", str(ovf), "--output-dir", str(outdir), "--network", NETWORK
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "a DTD (<!DOCTYPE>) is not allowed" in run.stderr
    assert "web-entity" not in _submitted(repair_cluster)
