"""A retry that finds the output its previous attempt published finishes COMPLETED with it,
once the output is proven to be that attempt's (record and sha256); anything else at the final
path is still OUTPUT_EXISTS. Real processes: the first attempt fails after its image is renamed
into place (its job log cannot be written: a directory holds the log's name)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from devsupport.images import build_image
from devsupport.specs import job_spec
from tests.support.faults import FaultCluster, temporary_files

# Long enough between attempts for the test to clear the fault.
ARGS = ("--retry-backoff-seconds", "3", "--timeout-margin-seconds", "5")


def _first_attempt_fails_after_publishing(faults: FaultCluster, job_id: str) -> Path:
    faults.start_controlplane(*ARGS)
    faults.start_agent("node-1")
    source = build_image(faults.input_dir, "qcow2")
    out = faults.output_dir / job_id
    out.mkdir()
    blocker = out / f"{job_id}.log.jsonl"
    blocker.mkdir()
    doc = job_spec(
        image=source.path,
        image_format="qcow2",
        output=out,
        job_id=job_id,
        parameters={"compress": False},
        artifacts={"log_upload": True},
        execution_policy={"retry_count": 1, "timeout_seconds": 300},
    )
    faults.submit(doc)
    faults.wait_state(job_id, "RETRYING")
    blocker.rmdir()
    return out / f"{source.path.stem}.qcow2"


def test_a_retry_keeps_the_output_its_previous_attempt_published(faults: FaultCluster) -> None:
    image = _first_attempt_fails_after_publishing(faults, "reuse-1")
    published = image.stat()
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    job = faults.wait_state("reuse-1", "COMPLETED")
    assert job.attempt == 2
    outputs = {o.kind: o for o in job.result.outputs}
    assert outputs["image"].path == str(image) and outputs["image"].sha256 == digest
    assert job.result.metrics["reused_from_attempt"] == 1
    assert image.stat().st_ino == published.st_ino  # kept, not written again
    assert (
        outputs["log"].sha256 == hashlib.sha256(Path(outputs["log"].path).read_bytes()).hexdigest()
    )
    assert temporary_files(image.parent) == []


def test_an_output_changed_since_its_attempt_wrote_it_is_not_taken(faults: FaultCluster) -> None:
    image = _first_attempt_fails_after_publishing(faults, "reuse-2")
    with open(image, "r+b") as f:  # same size, one byte different: only the hash can tell
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    job = faults.wait_state("reuse-2", "FAILED")
    assert job.result.error.code == "OUTPUT_EXISTS"
    assert "its content changed since attempt 1 wrote it" in job.result.error.message
