"""inspect through the real control plane and agent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from devsupport.cluster import Cluster
from devsupport.images import MiB, build_image
from devsupport.specs import job_spec


def _partitioned_raw(path: Path, label: str) -> None:
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
    table = "label: gpt\n,16M,L\n,,L\n" if label == "gpt" else "label: dos\n,16M,83\n,,83\n"
    subprocess.run(["sfdisk", "--quiet", str(path)], input=table, text=True, check=True)


def _inspect(cluster: Cluster, image: Path, fmt: str | None, outdir: Path) -> dict:
    doc = job_spec("inspect", image=image, image_format=fmt, output=outdir)
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch")
    job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
    job["_run"] = run
    return job


@pytest.mark.parametrize(
    ("variant", "qemu_format"),
    [
        ("vmdk-monolithicSparse", "vmdk"),
        ("vmdk-streamOptimized", "vmdk"),
        ("vhdx", "vhdx"),
        ("vhd", "vpc"),
        ("vdi", "vdi"),
        ("qcow2", "qcow2"),
    ],
)
def test_inspect_reports_format_and_virtual_size(
    cluster: Cluster, images: Path, outdir: Path, variant: str, qemu_format: str
) -> None:
    source = build_image(images, variant)
    job = _inspect(cluster, source.path, source.v1_format, outdir)
    assert job["state"] == "COMPLETED", job
    report_path = outdir / f"{job['spec']['job_id']}_inspection.json"
    on_disk = json.loads(report_path.read_text())
    assert on_disk["format"] == qemu_format
    assert on_disk["virtual_size"] == source.virtual_size
    assert job["result"]["details"]["format"] == qemu_format
    assert job["result"]["details"]["virtual_size"] == source.virtual_size
    assert str(report_path) in [o["path"] for o in job["result"]["outputs"]]


@pytest.mark.parametrize("label", ["gpt", "dos"])
def test_inspect_reads_partition_table(
    cluster: Cluster, images: Path, outdir: Path, label: str
) -> None:
    raw = images / f"disk-{label}.img"
    _partitioned_raw(raw, label)
    vmdk = images / f"disk-{label}.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(vmdk)], check=True
    )
    for image, fmt in ((raw, "raw"), (vmdk, "vmdk")):
        job = _inspect(cluster, image, fmt, outdir)
        assert job["state"] == "COMPLETED", job
        table = job["result"]["details"]["partition_table"]
        assert table["label"] == label
        assert len(table["partitions"]) == 2


def test_inspect_refuses_backing_file(cluster: Cluster, images: Path, outdir: Path) -> None:
    base = build_image(images, "qcow2", stem="base")
    overlay = images / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", str(base.path), str(overlay)],
        check=True,
        capture_output=True,
    )
    job = _inspect(cluster, overlay, "qcow2", outdir)
    assert job["state"] == "FAILED"
    assert job["result"]["error"]["code"] == "UNSAFE_IMAGE"
    assert "backing" in job["result"]["error"]["message"]


def test_raw_guess_is_refused_when_format_is_not_named(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    raw = images / "unnamed.img"
    raw.write_bytes(b"\0" * MiB)
    job = _inspect(cluster, raw, None, outdir)
    assert job["state"] == "FAILED"
    assert job["result"]["error"]["code"] == "UNSAFE_IMAGE"
