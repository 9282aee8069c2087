"""image.checksum does what it says: the agent hashes the image's bytes (the whole file, or a
disk's byte range inside an OVA) before reading it, and refuses a file that does not match."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from devsupport.cluster import Cluster
from devsupport.images import build_image
from devsupport.specs import job_spec


def _run(cluster: Cluster, doc: dict[str, Any]) -> dict[str, Any]:
    cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=180)
    return json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_matching_checksum_converts_and_a_wrong_one_fails_naming_it(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    source = build_image(images, "qcow2")
    good = job_spec(
        image=source.path, image_format="qcow2", output=outdir, parameters={"compress": False}
    )
    good["image"]["checksum"] = _sha(source.path.read_bytes())
    assert _run(cluster, good)["state"] == "COMPLETED"
    bad = job_spec(
        image=source.path,
        image_format="qcow2",
        output=outdir / "bad",
        parameters={"compress": False},
    )
    (outdir / "bad").mkdir()
    bad["image"]["checksum"] = _sha(b"another file")
    job = _run(cluster, bad)
    assert job["state"] == "FAILED"
    assert job["result"]["error"]["code"] == "INVALID_IMAGE"
    assert job["result"]["error"]["message"].startswith("image.checksum: sha256 of")
    assert list((outdir / "bad").iterdir()) == []


def test_the_checksum_of_a_disk_in_an_ova_covers_its_member_only(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    disk = build_image(images, "vmdk-streamOptimized")
    (images / "vm.ovf").write_text("<Envelope/>\n")
    ova = images / "sums.ova"
    subprocess.run(
        ["tar", "-cf", str(ova), "-C", str(images), "vm.ovf", disk.path.name], check=True
    )
    with tarfile.open(ova) as tar:
        member = tar.getmember(disk.path.name)
    migration = {
        "migration_id": "sum-1",
        "disk_id": "disk-0",
        "output_name": ".vm.qcow2.h2k-sum-1",
        "source_offset": member.offset_data,
        "source_size": member.size,
    }
    doc = job_spec(
        image=ova,
        image_format="vmdk",
        output=outdir,
        parameters={"compress": False, "migration": migration},
    )
    doc["image"]["checksum"] = _sha(disk.path.read_bytes())  # what an OVA's .mf lists
    assert _run(cluster, doc)["state"] == "COMPLETED"
