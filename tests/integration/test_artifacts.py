"""The artifacts fields do what they say: log_upload publishes the job's own log, every output
carries its sha256, and combinations that cannot mean anything are refused at SubmitJob."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from devsupport.cluster import Cluster
from devsupport.images import build_image
from devsupport.specs import job_spec


def _run(cluster: Cluster, doc: dict[str, Any]) -> dict[str, Any]:
    cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=180)
    return json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_output_carries_its_sha256_and_log_upload_publishes_the_jobs_log(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    source = build_image(images, "vmdk-streamOptimized")
    doc = job_spec(image=source.path, output=outdir, artifacts={"log_upload": True})
    job = _run(cluster, doc)
    assert job["state"] == "COMPLETED", job["result"]["error"]
    image, log = job["result"]["outputs"]
    assert image["path"] == str(outdir / f"{source.path.stem}.qcow2")
    assert image["sha256"] == _sha256(Path(image["path"]))
    assert log["kind"] == "log" and log["format"] == "jsonl"
    assert log["path"] == str(outdir / f"{doc['job_id']}.log.jsonl")
    assert log["sha256"] == _sha256(Path(log["path"]))
    assert log["size_bytes"] == Path(log["path"]).stat().st_size
    lines = _log(Path(log["path"]))
    events = [line for line in lines if line["type"] == "event"]
    assert events[0]["state"] == "JOB_STATE_RUNNING"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    tools = [line for line in lines if line["type"] == "tool"]
    assert any(t["argv"][:2] == ["qemu-img", "convert"] and t["exit_code"] == 0 for t in tools)
    outcome = lines[-1]
    assert outcome["type"] == "outcome" and outcome["state"] == "COMPLETED"
    assert outcome["outputs"][0]["sha256"] == image["sha256"]
    # What a user reads: `h2kctl get` shows the digests.
    shown = cluster.h2kctl("get", doc["job_id"], check=True).stdout
    assert image["sha256"][:12] in shown.replace("\n", "")
    # Nothing half-written beside them.
    assert sorted(p.name for p in outdir.iterdir()) == sorted(
        [Path(image["path"]).name, Path(log["path"]).name]
    )


def test_without_log_upload_no_log_is_written(cluster: Cluster, images: Path, outdir: Path) -> None:
    source = build_image(images, "qcow2")
    doc = job_spec(image=source.path, image_format="qcow2", output=outdir)
    job = _run(cluster, doc)
    assert [o["kind"] for o in job["result"]["outputs"]] == ["image"]
    assert not (outdir / f"{doc['job_id']}.log.jsonl").exists()


def test_a_failed_job_publishes_its_log_with_the_tools_stderr(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    bogus = images / "not-a-vmdk.vmdk"
    bogus.write_bytes(b"KDMV" + b"\xff" * 4096)
    doc = job_spec(
        image=bogus,
        output=outdir,
        artifacts={"log_upload": True},
        execution_policy={"retry_count": 0},
    )
    job = _run(cluster, doc)
    assert job["state"] == "FAILED"
    (log,) = job["result"]["outputs"]
    lines = _log(Path(log["path"]))
    assert lines[-1]["state"] == "FAILED"
    assert lines[-1]["code"] == job["result"]["error"]["code"]
    assert log["sha256"] == _sha256(Path(log["path"]))


@pytest.mark.parametrize(
    ("operation", "artifacts", "field"),
    [
        ("convert", {"store_fixed_image": False}, "artifacts.store_fixed_image"),
        ("convert", {"keep_intermediates": True}, "artifacts.keep_intermediates"),
        ("inspect", {"keep_intermediates": True}, "artifacts.keep_intermediates"),
    ],
)
def test_artifacts_that_cannot_apply_are_refused_naming_the_field(
    cluster: Cluster, outdir: Path, operation: str, artifacts: dict[str, Any], field: str
) -> None:
    doc = job_spec(operation, output=outdir, artifacts=artifacts)
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)))
    assert run.returncode != 0
    assert "INVALID_ARGUMENT" in run.stderr and f"{field}:" in run.stderr, run.stderr


def test_a_repair_may_ask_for_the_report_only(cluster: Cluster, outdir: Path) -> None:
    doc = job_spec("offline_fix", output=outdir, artifacts={"store_fixed_image": False})
    doc["requested_actions"] = doc.get("requested_actions") or ["fix_fstab"]
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)))
    assert "artifacts.store_fixed_image" not in run.stderr, run.stderr
    assert run.returncode == 0, run.stderr
    cluster.h2kctl("cancel", doc["job_id"])
