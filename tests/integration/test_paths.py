"""Inputs that do not exist or lie outside the agent's allow-lists fail with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

from devsupport.cluster import Cluster
from devsupport.images import build_image
from devsupport.specs import job_spec


def _run(cluster: Cluster, doc: dict) -> dict:
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch")
    assert run.returncode == 1, run.stdout + run.stderr
    return json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)


def test_missing_input_fails_saying_so(cluster: Cluster, images: Path, outdir: Path) -> None:
    missing = images / "nope.vmdk"
    job = _run(cluster, job_spec(image=missing, output=outdir))
    assert job["state"] == "FAILED"
    assert job["result"]["error"]["code"] == "INPUT_NOT_FOUND"
    assert str(missing) in job["result"]["error"]["message"]
    assert "does not exist" in job["result"]["error"]["message"]


def test_input_outside_allow_list_fails(cluster: Cluster, tmp_path: Path, outdir: Path) -> None:
    outside = build_image(tmp_path, "qcow2")
    job = _run(cluster, job_spec(image=outside.path, image_format="qcow2", output=outdir))
    assert job["result"]["error"]["code"] == "PATH_NOT_ALLOWED"
    assert "outside the allowed input directories" in job["result"]["error"]["message"]
    assert list(outdir.iterdir()) == []


def test_symlink_escape_is_refused(cluster: Cluster, images: Path, outdir: Path) -> None:
    link = images / "passwd.vmdk"
    link.symlink_to("/etc/passwd")
    job = _run(cluster, job_spec(image=link, output=outdir))
    assert job["result"]["error"]["code"] == "PATH_NOT_ALLOWED"


def test_output_outside_allow_list_fails(cluster: Cluster, images: Path, tmp_path: Path) -> None:
    source = build_image(images, "qcow2")
    job = _run(cluster, job_spec(image=source.path, image_format="qcow2", output=tmp_path))
    assert job["result"]["error"]["code"] == "PATH_NOT_ALLOWED"
    assert list(tmp_path.iterdir()) == []
