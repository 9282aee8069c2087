"""Path escapes through a real agent: each refused with a clear error, nothing read or written."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from devsupport.cluster import Cluster
from devsupport.images import build_image
from devsupport.specs import job_spec
from tests.security.witness import AtimeWitness


def run_job(cluster: Cluster, doc: dict[str, Any]) -> dict[str, Any]:
    """Submit, follow to the end, return the job as ``h2kctl get -o json`` shows it."""
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=120)
    assert run.returncode in (0, 1), run.stderr  # 2 would mean the document never left
    return json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)


def error_of(job: dict[str, Any]) -> tuple[str, str]:
    assert job["state"] == "FAILED", job["state"]
    return job["result"]["error"]["code"], job["result"]["error"]["message"]


@pytest.fixture
def witness(tmp_path: Path) -> AtimeWitness:
    """A file outside every allow-list; the test proves nobody read it."""
    w = AtimeWitness(tmp_path / "secret.img")
    assert w.proves_reads_are_seen(), "this file system does not update access times"
    return w


def test_dotdot_in_the_input_path(
    tls_cluster: Cluster, images: Path, outdir: Path, witness: AtimeWitness
) -> None:
    sneaky = str(images) + "/.." * 12 + str(witness.path)
    code, message = error_of(run_job(tls_cluster, job_spec(image=sneaky, output=outdir)))
    assert code == "PATH_NOT_ALLOWED"
    assert f"resolves to {witness.path}" in message
    assert "outside the allowed input directories" in message
    assert witness.untouched() and list(outdir.iterdir()) == []


def test_symlink_inside_the_allowed_directory_pointing_at_etc(
    tls_cluster: Cluster, images: Path, outdir: Path
) -> None:
    (images / "etc").symlink_to("/etc")
    doc = job_spec(image=images / "etc" / "passwd", image_format="raw", output=outdir)
    code, message = error_of(run_job(tls_cluster, doc))
    assert code == "PATH_NOT_ALLOWED"
    assert "resolves to /etc/passwd" in message
    assert list(outdir.iterdir()) == []


def test_symlink_to_a_file_outside_is_not_read(
    tls_cluster: Cluster, images: Path, outdir: Path, witness: AtimeWitness
) -> None:
    (images / "disk.img").symlink_to(witness.path)
    doc = job_spec(image=images / "disk.img", image_format="raw", output=outdir)
    code, _ = error_of(run_job(tls_cluster, doc))
    assert code == "PATH_NOT_ALLOWED"
    assert witness.untouched() and list(outdir.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "mode", "device"),
    [
        ("a block device", stat.S_IFBLK, os.makedev(7, 0)),  # what /dev/loop0 is
        ("a character device", stat.S_IFCHR, os.makedev(1, 3)),  # what /dev/null is
    ],
)
def test_device_nodes_as_input(
    tls_cluster: Cluster, images: Path, outdir: Path, kind: str, mode: int, device: int
) -> None:
    node = images / "vda"
    os.mknod(node, mode | 0o600, device)
    code, message = error_of(
        run_job(tls_cluster, job_spec(image=node, image_format="raw", output=outdir))
    )
    assert code == "PATH_NOT_ALLOWED"
    assert message == f"image.path: {node} is not a regular file ({kind})"
    assert list(outdir.iterdir()) == []


def test_dev_vda_itself(tls_cluster: Cluster, outdir: Path) -> None:
    code, message = error_of(
        run_job(tls_cluster, job_spec(image="/dev/vda", image_format="raw", output=outdir))
    )
    assert code == "PATH_NOT_ALLOWED"
    assert "/dev/vda is outside the allowed input directories" in message


def test_output_that_is_the_input(tls_cluster: Cluster, images: Path, outdir: Path) -> None:
    source = build_image(images, "qcow2", stem="disk")
    before = hashlib.sha256(source.path.read_bytes()).hexdigest()
    # The output name <output_path>/disk.qcow2 is made to be the input itself.
    (outdir / "disk.qcow2").symlink_to(source.path)
    doc = job_spec(
        image=source.path,
        image_format="qcow2",
        output=outdir,
        parameters={"output_format": "qcow2", "overwrite": True},
    )
    code, message = error_of(run_job(tls_cluster, doc))
    assert code == "PATH_NOT_ALLOWED"
    assert "would overwrite the input image" in message
    assert hashlib.sha256(source.path.read_bytes()).hexdigest() == before


def test_output_name_planted_as_a_symlink_is_not_written_through(
    tls_cluster: Cluster, images: Path, outdir: Path, witness: AtimeWitness
) -> None:
    source = build_image(images, "qcow2", stem="disk")
    victim_before = witness.path.read_bytes()
    witness.arm()
    (outdir / "disk.raw").symlink_to(witness.path)
    doc = job_spec(
        image=source.path,
        image_format="qcow2",
        output=outdir,
        parameters={"output_format": "raw", "compress": False, "overwrite": True},
    )
    code, message = error_of(run_job(tls_cluster, doc))
    assert code == "PATH_NOT_ALLOWED"
    assert "outside the allowed output directories" in message
    assert witness.path.read_bytes() == victim_before


def test_output_directory_outside_the_allow_list(
    tls_cluster: Cluster, images: Path, tmp_path: Path
) -> None:
    source = build_image(images, "qcow2")
    target = tmp_path / "elsewhere"
    target.mkdir()
    doc = job_spec(image=source.path, image_format="qcow2", output=target)
    code, message = error_of(run_job(tls_cluster, doc))
    assert code == "PATH_NOT_ALLOWED"
    assert f"artifacts.output_path: {target} is outside the allowed output directories" in message
    assert list(target.iterdir()) == []
