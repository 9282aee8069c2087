"""SubmitJobs on a real control plane: a wave of jobs in one call, all or none; and
`h2kctl submit` with several files."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from devsupport.cluster import Cluster
from devsupport.specs import job_spec
from protocol.conversion import spec_to_proto
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc
from protocol.spec import parse_spec


@pytest.fixture(scope="module")
def stub(cluster: Cluster):
    channel = grpc.insecure_channel(cluster.address)
    yield services_pb2_grpc.JobServiceStub(channel)
    channel.close()


def wave(size: int) -> list[job_pb2.JobSpec]:
    prefix = uuid.uuid4().hex[:8]
    return [spec_to_proto(parse_spec(job_spec(job_id=f"w-{prefix}-{i}"))) for i in range(size)]


def stored(stub, specs: list[job_pb2.JobSpec]) -> list[str]:
    """The job ids of ``specs`` the control plane knows."""
    found = []
    for spec in specs:
        try:
            stub.GetJob(services_pb2.GetJobRequest(job_id=spec.job_id), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.NOT_FOUND
            continue
        found.append(spec.job_id)
    return found


def submit(stub, specs: list[job_pb2.JobSpec]) -> services_pb2.SubmitJobsResponse:
    return stub.SubmitJobs(services_pb2.SubmitJobsRequest(specs=specs), timeout=30)


def test_a_wave_is_queued_in_request_order_and_resubmitting_it_creates_nothing(stub) -> None:
    specs = wave(50)
    first = submit(stub, specs)
    again = submit(stub, specs)

    assert [r.job.spec.job_id for r in first.results] == [s.job_id for s in specs]
    assert all(r.created for r in first.results)
    assert {r.job.state for r in first.results} == {job_pb2.JOB_STATE_QUEUED}
    assert [r.job.spec.job_id for r in again.results] == [s.job_id for s in specs]
    assert not any(r.created for r in again.results)


def test_one_invalid_spec_fails_the_call_naming_it_and_stores_none(stub) -> None:
    specs = wave(5)
    specs[3].image.path = "relative.vmdk"
    specs[4].execution_policy.priority = 11

    with pytest.raises(grpc.RpcError) as caught:
        submit(stub, specs)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert "specs[3]: image.path: must be an absolute path" in details
    assert "specs[4]: execution_policy.priority: must be between 1 and 10" in details
    assert stored(stub, specs) == []


def test_a_conflicting_spec_fails_the_call_and_stores_none_of_the_others(stub) -> None:
    specs = wave(4)
    submit(stub, specs[2:3])
    specs[2].execution_policy.priority = 1  # same job_id, different spec

    with pytest.raises(grpc.RpcError) as caught:
        submit(stub, specs)

    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.details().startswith("specs[2].job_id: job ")
    assert stored(stub, specs) == [specs[2].job_id]


@pytest.mark.parametrize(
    ("size", "duplicate", "expected"),
    [
        (0, False, "specs: at least one spec"),
        (1001, False, "specs: at most 1000 per call (got 1001)"),
        (3, True, "specs[2].job_id: repeats specs[0].job_id"),
    ],
)
def test_an_empty_oversized_or_repetitive_wave_is_refused(
    stub, size: int, duplicate: bool, expected: str
) -> None:
    specs = wave(size)
    if duplicate:
        specs[2].CopyFrom(specs[0])

    with pytest.raises(grpc.RpcError) as caught:
        submit(stub, specs)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == expected
    assert stored(stub, specs[:3]) == []


def test_h2kctl_submits_several_files_in_one_call(cluster: Cluster) -> None:
    prefix = uuid.uuid4().hex[:8]
    docs = [job_spec(job_id=f"f-{prefix}-{i}") for i in range(3)]
    paths = [str(cluster.write_job(doc)) for doc in docs]

    run = cluster.h2kctl("submit", *paths, check=True)
    again = cluster.h2kctl("submit", *paths, check=True)
    watched = cluster.h2kctl("submit", "--watch", *paths)

    assert run.stdout.split() == [doc["job_id"] for doc in docs]
    assert again.stderr.count("already exists with the same spec") == 3
    assert watched.returncode == 2
    assert "--watch follows one job" in watched.stderr
    for doc in docs:
        job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
        assert job["spec"]["image"]["path"] == doc["image"]["path"]
