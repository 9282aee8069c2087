"""The JobService contract on a real control plane: validation, idempotency, queueing, watch."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import pytest

from devsupport.cluster import Cluster, wait_for
from devsupport.images import build_image
from devsupport.specs import job_spec
from protocol.conversion import spec_to_proto
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc
from protocol.spec import parse_spec

INVALID = [
    ("execution_policy", "priority", 11, "execution_policy.priority: must be between 1 and 10"),
    ("execution_policy", "retry_count", 6, "execution_policy.retry_count: must be between 0 and 5"),
    (
        "execution_policy",
        "timeout_seconds",
        30,
        "execution_policy.timeout_seconds: must be between 60 and 86400",
    ),
    (
        "capability_requirements",
        "min_memory_gb",
        0,
        "capability_requirements.min_memory_gb: must be at least 1",
    ),
    ("image", "path", "relative.vmdk", "image.path: must be an absolute path"),
    ("image", "format", "iso", "image.format: must be"),
    ("image", "checksum", "sha1:00", "image.checksum: must be 'sha256:'"),
    ("artifacts", "output_path", "", "artifacts.output_path: is required"),
    ("audit", "requested_by", "", "audit.requested_by: is required"),
    (None, "job_id", "", "job_id: is required"),
    (None, "job_id", "bad/id", "job_id: must be 1-128 characters"),
    (None, "version", "2.0", 'version: must be "1.0"'),
    (None, "operation", 0, "operation: is required"),
]


@pytest.fixture(scope="module")
def stub(cluster: Cluster):
    channel = grpc.insecure_channel(cluster.address)
    yield services_pb2_grpc.JobServiceStub(channel)
    channel.close()


def _valid_proto() -> job_pb2.JobSpec:
    return spec_to_proto(parse_spec(job_spec()))


@pytest.mark.parametrize(("message", "field", "value", "expected"), INVALID)
def test_each_invalid_field_answers_invalid_argument(
    stub, message: str | None, field: str, value: object, expected: str
) -> None:
    spec = _valid_proto()
    target = getattr(spec, message) if message else spec
    setattr(target, field, value)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SubmitJob(services_pb2.SubmitJobRequest(spec=spec), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in caught.value.details()
    # the service keeps serving and stored nothing
    assert stub.ListJobs(services_pb2.ListJobsRequest(), timeout=10) is not None
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetJob(services_pb2.GetJobRequest(job_id=spec.job_id or "x"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_empty_request_is_rejected_naming_fields(stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.SubmitJob(services_pb2.SubmitJobRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for field in ("job_id", "operation", "image", "artifacts", "audit"):
        assert f"{field}: is required" in caught.value.details()


def test_h2kctl_rejects_invalid_file_locally(cluster: Cluster) -> None:
    doc = job_spec(execution_policy={"priority": 42})
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)))
    assert run.returncode == 2
    assert "execution_policy.priority: must be between 1 and 10" in run.stderr
    assert cluster.h2kctl("get", doc["job_id"]).returncode == 1


def test_resubmission_is_idempotent(cluster: Cluster, outdir: Path) -> None:
    # needs_nbd keeps it queued (no agent here has nbd), so it stays put while we look
    doc = job_spec(output=outdir, capability_requirements={"needs_nbd": True})
    path = cluster.write_job(doc)
    first = cluster.h2kctl("submit", str(path), check=True)
    second = cluster.h2kctl("submit", str(path), check=True)
    assert first.stdout.strip() == second.stdout.strip() == doc["job_id"]
    jobs = json.loads(cluster.h2kctl("list", "-o", "json", check=True).stdout)
    assert [j["spec"]["job_id"] for j in jobs].count(doc["job_id"]) == 1

    changed = dict(doc, execution_policy={**doc["execution_policy"], "priority": 1})
    path.write_text(json.dumps(changed))
    third = cluster.h2kctl("submit", str(path))
    assert third.returncode == 1
    assert "ALREADY_EXISTS" in third.stderr
    cluster.h2kctl("cancel", doc["job_id"], check=True)


def test_job_nobody_can_run_waits_with_reason_and_can_be_cancelled(
    cluster: Cluster, outdir: Path
) -> None:
    doc = job_spec(output=outdir, capability_requirements={"needs_nbd": True})
    cluster.h2kctl("submit", str(cluster.write_job(doc)), check=True)

    def reason() -> str:
        job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
        assert job["state"] == "QUEUED"
        return job.get("queue_reason", "")

    assert "nbd" in wait_for(reason, what="queue reason")
    table = cluster.h2kctl("get", doc["job_id"], check=True).stdout
    assert "nbd" in table
    queued = json.loads(
        cluster.h2kctl("list", "--state", "queued", "-o", "json", check=True).stdout
    )
    assert doc["job_id"] in [j["spec"]["job_id"] for j in queued]

    cluster.h2kctl("cancel", doc["job_id"], check=True)
    job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
    assert job["state"] == "CANCELLED"
    assert [h["to"] for h in job["history"]] == ["VALIDATED", "QUEUED", "CANCELLED"]
    again = cluster.h2kctl("cancel", doc["job_id"])
    assert again.returncode == 1 and "FAILED_PRECONDITION" in again.stderr


def test_many_watchers_each_see_every_event_once(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    source = build_image(images, "vmdk-monolithicSparse", size=256 << 20)
    doc = job_spec(image=source.path, output=outdir)
    seen: dict[int, list[int]] = {}

    with cluster.client() as client:
        client.submit(doc)

        def watch(i: int) -> None:
            with cluster.client() as own:
                seen[i] = [e.seq for e in own.watch(doc["job_id"])]

        threads = [threading.Thread(target=watch, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        final = client.get(doc["job_id"])
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    expected = list(range(1, final.last_seq + 1))
    assert len(seen) == 5
    for seqs in seen.values():
        assert seqs == expected


def test_events_and_get_outputs(cluster: Cluster, images: Path, outdir: Path) -> None:
    source = build_image(images, "qcow2")
    doc = job_spec(image=source.path, image_format="qcow2", output=outdir)
    cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", check=True)
    lines = cluster.h2kctl("events", doc["job_id"], "-o", "json", check=True).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["state"] == "COMPLETED"
    yaml_out = cluster.h2kctl("get", doc["job_id"], "-o", "yaml", check=True).stdout
    assert "COMPLETED" in yaml_out
    table = cluster.h2kctl("get", doc["job_id"], check=True).stdout
    assert "COMPLETED" in table and "qcow2.qcow2" in table
    job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
    assert job["assigned_agent"] == "node-1"
    assert [h["to"] for h in job["history"]] == [
        "VALIDATED",
        "QUEUED",
        "ASSIGNED",
        "RUNNING",
        "PROGRESSING",
        "COMPLETED",
    ]
    agents = json.loads(cluster.h2kctl("agents", "-o", "json", check=True).stdout)
    caps = agents[0]["capabilities"]
    assert caps["qemu_img"]["available"] is True
    assert caps["nbd"]["available"] is False
