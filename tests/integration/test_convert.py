"""Convert every v1 input format through the real control plane and agent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from devsupport.cluster import Cluster
from devsupport.images import VARIANTS, build_image, compare, image_info
from devsupport.specs import job_spec
from tests.support.assertions import assert_gap_free_monotonic


def _events(cluster: Cluster, job_id: str) -> list[dict]:
    out = cluster.h2kctl("events", job_id, "-o", "json", check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "tmp" in p.name or p.name.startswith("."))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_convert_each_format_to_qcow2(
    cluster: Cluster, images: Path, outdir: Path, variant: str
) -> None:
    source = build_image(images, variant)
    doc = job_spec(image=source.path, image_format=source.v1_format, output=outdir)
    job_file = cluster.write_job(doc)

    run = cluster.h2kctl("submit", str(job_file), "--watch", timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0].strip() == doc["job_id"]

    job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
    assert job["state"] == "COMPLETED"
    output = outdir / f"{source.path.stem}.qcow2"
    assert [o["path"] for o in job["result"]["outputs"]] == [str(output)]
    assert compare(source, output, "qcow2").returncode == 0
    info = image_info(output)
    assert info["virtual-size"] == source.virtual_size
    assert _leftovers(outdir) == []
    assert_gap_free_monotonic(_events(cluster, doc["job_id"]))


@pytest.mark.parametrize(("output_format", "compress"), [("raw", False), ("qcow2", False)])
def test_convert_output_format_and_compression(
    cluster: Cluster, images: Path, outdir: Path, output_format: str, compress: bool
) -> None:
    source = build_image(images, "vmdk-streamOptimized")
    doc = job_spec(
        image=source.path,
        output=outdir,
        parameters={"output_format": output_format, "compress": compress},
    )
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    output = outdir / f"{source.path.stem}.{output_format}"
    assert compare(source, output, output_format).returncode == 0
    if output_format == "raw":
        # sparse output: the holes of the source stay holes
        assert output.stat().st_blocks * 512 < source.virtual_size


def test_compressed_output_is_smaller_than_uncompressed(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    raw = images / "compressible.img"
    with open(raw, "wb") as f:
        f.truncate(32 << 20)
        f.write(b"all work and no play makes jack a dull boy\n" * 200_000)
    sizes = {}
    for compress in (True, False):
        out = outdir / f"c{int(compress)}"
        out.mkdir()
        doc = job_spec(
            image=raw,
            image_format="raw",
            output=out,
            parameters={"output_format": "qcow2", "compress": compress},
        )
        run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=180)
        assert run.returncode == 0, run.stdout + run.stderr
        sizes[compress] = (out / "compressible.qcow2").stat().st_size
        result = subprocess.run(
            [
                "qemu-img",
                "compare",
                "-f",
                "raw",
                "-F",
                "qcow2",
                str(raw),
                str(out / "compressible.qcow2"),
            ],
            capture_output=True,
        )
        assert result.returncode == 0
    assert sizes[True] < sizes[False] / 4


def test_source_is_never_modified(cluster: Cluster, images: Path, outdir: Path) -> None:
    source = build_image(images, "vmdk-monolithicSparse")
    before = subprocess.run(
        ["sha256sum", str(source.path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    mtime = source.path.stat().st_mtime_ns
    doc = job_spec(image=source.path, output=outdir)
    assert cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch").returncode == 0
    after = subprocess.run(
        ["sha256sum", str(source.path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert before == after
    assert source.path.stat().st_mtime_ns == mtime


def test_existing_output_is_not_overwritten(cluster: Cluster, images: Path, outdir: Path) -> None:
    source = build_image(images, "qcow2")
    existing = outdir / "qcow2.qcow2"
    existing.write_bytes(b"precious")
    doc = job_spec(image=source.path, image_format="qcow2", output=outdir)
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch")
    assert run.returncode == 1
    job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
    assert job["state"] == "FAILED"
    assert str(existing) in job["result"]["error"]["message"]
    assert existing.read_bytes() == b"precious"
