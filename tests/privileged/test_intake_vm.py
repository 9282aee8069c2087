"""A repaired two-disk guest through h2k-intake, watched by the HyperSDK stand-in: the moment
``<vm>.qcow2`` appears every disk is a complete qcow2 of its source's size (the repair changes
the disks, so their content is not compared) and the definitions are there."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devsupport.cluster import BIN, Cluster, Process, wait_for
from tests.support import hypersdk
from tests.support.guests import PartitionSpec, build_disk

EXAMPLE = Path(__file__).resolve().parents[1] / "unit" / "migration" / "data"
RELEASE = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
FSTAB = "/dev/sda1  /     ext4  defaults  0 1\n/dev/sdb1  /var  ext4  defaults  0 2\n"


def _disk(target: Path, tree: dict[str, Any]) -> Path:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        build_disk(target, "dos", [PartitionSpec("ext4", 48, tree)], Path(scratch))
    return target


def _info(path: Path, fmt: str) -> dict[str, Any]:
    run = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", fmt, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(run.stdout))


@pytest.fixture
def intake(repair_cluster: Cluster, outdir: Path) -> Iterator[tuple[Path, Path]]:
    queue, output = outdir / "queue", outdir / "output"
    argv = [
        str(BIN / "h2k-intake"),
        "--control-plane",
        repair_cluster.address,
        "--insecure",
        "--queue",
        f"{queue}={output}",
        "--settle-seconds",
        "0.4",
        "--poll-seconds",
        "0.2",
        "--network",
        "VM Network=network:default",
    ]
    proc = Process("intake", argv, outdir / "intake.log")
    proc.start()
    try:
        wait_for(lambda: "intake watching" in proc.log(), what="intake watching", timeout=30)
        yield queue, output
    finally:
        proc.stop()
        print(proc.log()[-5000:])


def test_a_repaired_two_disk_vm_is_complete_when_hypersdk_sees_it(
    repair_cluster: Cluster, intake: tuple[Path, Path]
) -> None:
    queue, output = intake
    directory = repair_cluster.input_dir / "intake-web"
    directory.mkdir()
    root = {"/etc/os-release": RELEASE, "/etc/fstab": FSTAB, "/var/": "", "/proc/": ""}
    disks = (
        _disk(directory / "disk1.vmdk", root),
        _disk(directory / "disk2.vmdk", {"/log/marker": "on /var\n"}),
    )
    document = json.loads((EXAMPLE / "vsphere-artifact-manifest.json").read_text())
    document["source"]["vm_name"] = "intake-web"
    for entry, disk in zip(document["disks"], disks, strict=True):
        entry["local_path"] = str(disk)
        entry["bytes"] = disk.stat().st_size
    sizes = {d: _info(d, "vmdk")["virtual-size"] for d in disks}

    def complete(image: Path) -> None:
        for path, source in ((image, disks[0]), (output / "intake-web-disk-2.qcow2", disks[1])):
            check = subprocess.run(
                ["qemu-img", "check", "-f", "qcow2", str(path)], capture_output=True, text=True
            )
            assert check.returncode == 0, check.stdout + check.stderr
            info = _info(path, "qcow2")
            assert info["format"] == "qcow2" and info["virtual-size"] == sizes[source]
        for name in ("intake-web.xml", "intake-web.kubevirt.yaml", "intake-web.report.json"):
            assert (output / name).exists(), name

    hypersdk.drop(queue, "artifact-manifest.json", json.dumps(document, indent=2).encode())
    outcome = hypersdk.wait_for_result(output, "intake-web", timeout=280, on_success=complete)
    assert outcome.succeeded
    report = json.loads((output / "intake-web.report.json").read_text())
    assert report["options"]["pipeline.repair"].startswith("the boot disk was repaired")
    wait_for(lambda: not list((queue / ".claimed").iterdir()), what="claim archived")
