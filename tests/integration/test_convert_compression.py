"""Compressed qcow2 output through the real control plane and agent: zlib or zstd."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devsupport.cluster import Cluster
from devsupport.images import image_info
from devsupport.specs import job_spec


def _zstd_supported(directory: Path) -> bool:
    probe = directory / "zstd-check.qcow2"
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd"]
    made = subprocess.run([*create, str(probe), "1M"], capture_output=True)
    probe.unlink(missing_ok=True)
    return made.returncode == 0


def _compressible(images: Path) -> Path:
    raw = images / "compressible.img"
    with open(raw, "wb") as f:
        f.truncate(32 << 20)
        f.write(b"all work and no play makes jack a dull boy\n" * 200_000)
    return raw


@pytest.mark.parametrize("asked", [None, "zlib", "zstd"])
def test_compressed_output_uses_the_asked_compression_type(
    cluster: Cluster, images: Path, outdir: Path, asked: str | None
) -> None:
    if asked == "zstd" and not _zstd_supported(images):
        pytest.skip("this qemu-img cannot write zstd-compressed qcow2")
    raw = _compressible(images)
    parameters = {"output_format": "qcow2", "compress": True}
    if asked is not None:
        parameters["compression_type"] = asked
    doc = job_spec(image=raw, image_format="raw", output=outdir, parameters=parameters)
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr

    output = outdir / "compressible.qcow2"
    info = image_info(output)
    assert info["format-specific"]["data"]["compression-type"] == (asked or "zlib")
    assert output.stat().st_size < (32 << 20) / 4
    same = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(output)],
        capture_output=True,
    )
    assert same.returncode == 0, same.stdout + same.stderr


def test_compression_type_without_compression_is_refused_at_submit(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    doc = job_spec(
        image=images / "never-read.img",
        image_format="raw",
        output=outdir,
        parameters={"output_format": "qcow2", "compress": False, "compression_type": "zstd"},
    )
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)))
    assert run.returncode != 0
    assert "parameters.compression_type: only applies to compressed qcow2 output" in run.stderr
    assert list(outdir.iterdir()) == []
