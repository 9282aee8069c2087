"""Hostile images built by the tests, through a real agent: refused before anything is read.

Targets are files the test owns outside every allow-list: FIFOs (a qemu-img that opened one
would hang in open(), and :func:`fifo_never_opened` sees no reader) and access-time witnesses.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devsupport.cluster import Cluster
from devsupport.images import build_image
from devsupport.specs import job_spec
from tests.security.test_paths import error_of, run_job
from tests.security.witness import AtimeWitness, fifo_never_opened

MiB = 1 << 20
FAST = {"timeout_seconds": 60}  # a hung qemu-img would fail the job, not the suite


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "shadow.fifo"
    os.mkfifo(path)
    return path


def _descriptor(extent: str, *, parent: str | None = None, sectors: int = 2048) -> str:
    lines = [
        "# Disk DescriptorFile",
        "version=1",
        "CID=fffffffe",
        "parentCID=ffffffff",
        'createType="monolithicFlat"',
    ]
    if parent is not None:
        lines.append(f'parentFileNameHint="{parent}"')
    lines += [
        "",
        "# Extent description",
        f'RW {sectors} FLAT "{extent}" 0',
        "",
        'ddb.adapterType = "ide"',
        'ddb.geometry.cylinders = "2"',
        'ddb.geometry.heads = "16"',
        'ddb.geometry.sectors = "63"',
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("named", ["qcow2", None], ids=["format-named", "format-probed"])
def test_qcow2_with_a_backing_file(
    tls_cluster: Cluster, images: Path, outdir: Path, fifo: Path, named: str | None
) -> None:
    image = images / "child.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", str(fifo), "-F", "raw", str(image), "64M")
    doc = job_spec(image=image, image_format=named, output=outdir, execution_policy=FAST)
    code, message = error_of(run_job(tls_cluster, doc))
    assert code == "UNSAFE_IMAGE"
    assert f"has a backing file ({fifo})" in message
    assert fifo_never_opened(fifo) and list(outdir.iterdir()) == []


def test_qcow2_with_a_backing_file_that_is_a_regular_file(
    tls_cluster: Cluster, images: Path, outdir: Path, tmp_path: Path
) -> None:
    secret = AtimeWitness(tmp_path / "passwd")
    image = images / "child.qcow2"
    _qemu_img(
        "create", "-q", "-f", "qcow2", "-u", "-b", str(secret.path), "-F", "raw", str(image), "64M"
    )
    doc = job_spec(image=image, image_format="qcow2", output=outdir, operation="inspect")
    code, _ = error_of(run_job(tls_cluster, doc))
    assert code == "UNSAFE_IMAGE"
    assert secret.untouched()


def test_qcow2_with_an_external_data_file(
    tls_cluster: Cluster, images: Path, outdir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.raw"
    image = images / "external.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={data}", str(image), "64M")
    secret = AtimeWitness(data, content=None)
    code, message = error_of(
        run_job(tls_cluster, job_spec(image=image, image_format="qcow2", output=outdir))
    )
    assert code == "UNSAFE_IMAGE"
    assert "external data file" in message and str(data) in message
    assert secret.untouched()


def test_vmdk_extent_outside_the_image_directory(
    tls_cluster: Cluster, images: Path, outdir: Path, tmp_path: Path
) -> None:
    secret = AtimeWitness(tmp_path / "shadow", content=b"\0" * MiB)
    extent = os.path.relpath(secret.path, images)  # ../../../.. up and out, like ../../etc/shadow
    assert extent.startswith("../")
    image = images / "escape.vmdk"
    image.write_text(_descriptor(extent))
    code, message = error_of(
        run_job(tls_cluster, job_spec(image=image, image_format="vmdk", output=outdir))
    )
    assert code == "UNSAFE_IMAGE"
    assert f"has an extent outside its directory ({extent} resolves to {secret.path})" in message
    assert secret.untouched() and list(outdir.iterdir()) == []


def test_vmdk_extent_in_another_allowed_directory_is_still_refused(
    tls_cluster: Cluster, images: Path, outdir: Path
) -> None:
    neighbour = images.parent / f"{images.name}-neighbour"
    neighbour.mkdir(exist_ok=True)
    secret = AtimeWitness(neighbour / "their.img", content=b"\0" * MiB)
    image = images / "neighbour.vmdk"
    image.write_text(_descriptor(f"../{neighbour.name}/their.img"))
    code, message = error_of(run_job(tls_cluster, job_spec(image=image, output=outdir)))
    assert code == "UNSAFE_IMAGE" and "outside its directory" in message
    assert secret.untouched()


def test_delta_vmdk_with_a_parent(
    tls_cluster: Cluster, images: Path, outdir: Path, fifo: Path
) -> None:
    (images / "flat.img").write_bytes(b"\0" * MiB)
    image = images / "delta.vmdk"
    image.write_text(_descriptor("flat.img", parent=str(fifo)))
    doc = job_spec(image=image, image_format="vmdk", output=outdir, execution_policy=FAST)
    code, message = error_of(run_job(tls_cluster, doc))
    assert code == "UNSAFE_IMAGE" and "delta VMDK with a parent" in message
    assert fifo_never_opened(fifo)


def test_vmdk_descriptor_with_its_extent_beside_it_converts(
    tls_cluster: Cluster, images: Path, outdir: Path
) -> None:
    flat = images / "disk-flat.img"
    flat.write_bytes(os.urandom(MiB))
    image = images / "disk.vmdk"
    image.write_text(_descriptor("disk-flat.img"))
    doc = job_spec(
        image=image,
        image_format="vmdk",
        output=outdir,
        parameters={"output_format": "raw", "compress": False},
    )
    job = run_job(tls_cluster, doc)
    assert job["state"] == "COMPLETED", job["result"]
    assert (outdir / "disk.raw").read_bytes() == flat.read_bytes()


def test_raw_file_that_looks_like_qcow2(
    tls_cluster: Cluster, images: Path, outdir: Path, fifo: Path
) -> None:
    image = images / "looks-like-qcow2.img"
    _qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", str(fifo), "-F", "raw", str(image), "64M")
    probed = job_spec(image=image, image_format=None, output=outdir, execution_policy=FAST)
    code, message = error_of(run_job(tls_cluster, probed))
    assert code == "UNSAFE_IMAGE" and "backing file" in message
    # Named raw, the same bytes are only data: converted as they are, the FIFO untouched.
    as_raw = job_spec(
        image=image,
        image_format="raw",
        output=outdir,
        execution_policy=FAST,
        parameters={"output_format": "raw", "compress": False},
    )
    job = run_job(tls_cluster, as_raw)
    assert job["state"] == "COMPLETED", job["result"]
    converted, original = (outdir / "looks-like-qcow2.raw").read_bytes(), image.read_bytes()
    # qemu's raw driver rounds the size up to whole sectors.
    assert converted == original + b"\0" * (len(converted) - len(original))
    assert fifo_never_opened(fifo)


def test_a_virtual_size_beyond_the_free_space_is_judged_by_its_data(
    tls_cluster: Cluster, images: Path, outdir: Path
) -> None:
    # A 64 TiB claim with no data needs a few hundred KiB of output: it converts. What does
    # not fit (by qemu-img measure of the allocated data) is refused before writing, and a
    # disk filling mid-write fails cleanly: tests/privileged/test_output_space.py.
    image = images / "huge.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", str(image), "64T")
    job = run_job(
        tls_cluster,
        job_spec(image=image, image_format="qcow2", output=outdir, parameters={"compress": False}),
    )
    assert job["state"] == "COMPLETED", job["result"]
    output = outdir / "huge.qcow2"
    assert output.stat().st_blocks * 512 < 64 << 20


def test_an_ordinary_image_still_converts_over_mtls(
    tls_cluster: Cluster, images: Path, outdir: Path
) -> None:
    source = build_image(images, "vmdk-twoGbMaxExtentSparse", stem="split")
    job = run_job(tls_cluster, job_spec(image=source.path, output=outdir))
    assert job["state"] == "COMPLETED", job["result"]
    assert (outdir / "split.qcow2").stat().st_size > 0
