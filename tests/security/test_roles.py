"""Client identity and roles on the control plane: every RPC, every role, real processes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from devsupport.cluster import BIN, Cluster, wait_for
from devsupport.pki import ClusterPKI
from devsupport.specs import job_spec
from protocol.conversion import spec_to_proto
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc
from protocol.spec import parse_spec
from tests.security.conftest import CI_TOKEN, MAX_STREAMS

Call = Callable[["Stubs"], Any]
CANCELLED = job_pb2.JOB_STATE_CANCELLED


class Stubs:
    """JobService and AgentRegistry stubs on one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.jobs = services_pb2_grpc.JobServiceStub(channel)
        self.agents = services_pb2_grpc.AgentRegistryStub(channel)


@contextmanager
def connected(cluster: Cluster, pki: ClusterPKI, identity: str) -> Iterator[Stubs]:
    leaf = pki.admin if identity == "admin" else pki.client(identity)
    with grpc.secure_channel(cluster.address, pki.credentials(leaf)) as channel:
        yield Stubs(channel)


def _spec(cluster: Cluster, requested_by: str = "someone", **overrides: Any) -> Any:
    doc = job_spec(
        image=cluster.input_dir / "roles" / "absent.vmdk",
        output=cluster.output_dir,
        audit={"requested_by": requested_by},
        **overrides,
    )
    return spec_to_proto(parse_spec(doc))


def _submit(stubs: Stubs, spec: Any) -> str:
    reply = stubs.jobs.SubmitJob(services_pb2.SubmitJobRequest(spec=spec), timeout=10)
    return str(reply.job.spec.job_id)


@pytest.fixture(scope="module")
def existing_job(tls_cluster: Cluster, pki: ClusterPKI) -> str:
    with connected(tls_cluster, pki, "admin") as admin:
        return _submit(admin, _spec(tls_cluster))


def _calls(cluster: Cluster, job_id: str) -> dict[str, Call]:
    return {
        "JobService/SubmitJob": lambda s: s.jobs.SubmitJob(
            services_pb2.SubmitJobRequest(spec=_spec(cluster)), timeout=10
        ),
        "JobService/SubmitJobs": lambda s: s.jobs.SubmitJobs(
            services_pb2.SubmitJobsRequest(specs=[_spec(cluster), _spec(cluster)]), timeout=10
        ),
        "JobService/GetJob": lambda s: s.jobs.GetJob(
            services_pb2.GetJobRequest(job_id=job_id), timeout=10
        ),
        "JobService/ListJobs": lambda s: s.jobs.ListJobs(
            services_pb2.ListJobsRequest(), timeout=10
        ),
        "JobService/WatchJob": lambda s: list(
            s.jobs.WatchJob(services_pb2.WatchJobRequest(job_id=job_id), timeout=10)
        ),
        "JobService/WatchJobBatches": lambda s: list(
            s.jobs.WatchJobBatches(services_pb2.WatchJobRequest(job_id=job_id), timeout=10)
        ),
        "JobService/ListJobEvents": lambda s: s.jobs.ListJobEvents(
            services_pb2.ListJobEventsRequest(job_id=job_id), timeout=10
        ),
        # Another's job: only admin may; submitters are checked again by ownership below.
        "JobService/CancelJob": lambda s: s.jobs.CancelJob(
            services_pb2.CancelJobRequest(job_id=job_id), timeout=10
        ),
        "AgentRegistry/ListAgents": lambda s: s.agents.ListAgents(
            services_pb2.ListAgentsRequest(), timeout=10
        ),
        "AgentRegistry/CordonAgent": lambda s: s.agents.CordonAgent(
            services_pb2.CordonAgentRequest(name="no-such-agent", cordon=True), timeout=10
        ),
        "AgentRegistry/DrainAgent": lambda s: s.agents.DrainAgent(
            services_pb2.DrainAgentRequest(name="no-such-agent"), timeout=10
        ),
        # Invalid on purpose: an allowed caller gets INVALID_ARGUMENT, nothing is registered.
        "AgentRegistry/RegisterAgent": lambda s: s.agents.RegisterAgent(
            services_pb2.RegisterAgentRequest(name=""), timeout=10
        ),
        # Under the caller's own name (test_agent_identity checks the binding): node-9 is
        # not registered, so an allowed caller is asked to register.
        "AgentRegistry/Heartbeat": lambda s: s.agents.Heartbeat(
            services_pb2.HeartbeatRequest(name="node-9"), timeout=10
        ),
    }


READ = {"admin", "vera", "sam"}
ALLOWED = {
    "JobService/SubmitJob": {"admin", "sam"},
    "JobService/SubmitJobs": {"admin", "sam"},
    "JobService/WatchJobBatches": READ,
    "JobService/GetJob": READ,
    "JobService/ListJobs": READ,
    "JobService/WatchJob": READ,
    "JobService/ListJobEvents": READ,
    "JobService/CancelJob": {"admin"},  # the job is admin's: sam is not its owner
    "AgentRegistry/ListAgents": READ,
    "AgentRegistry/CordonAgent": {"admin"},
    "AgentRegistry/DrainAgent": {"admin"},
    "AgentRegistry/RegisterAgent": {"admin", "node-9"},
    "AgentRegistry/Heartbeat": {"admin", "node-9"},
}
IDENTITIES = ["admin", "vera", "sam", "node-9", "nora"]


@pytest.mark.parametrize("method", sorted(ALLOWED))
def test_every_rpc_checks_roles(
    tls_cluster: Cluster, pki: ClusterPKI, existing_job: str, method: str
) -> None:
    call = _calls(tls_cluster, existing_job)[method]
    for identity in IDENTITIES:
        with connected(tls_cluster, pki, identity) as stubs:
            try:
                call(stubs)
                code = grpc.StatusCode.OK
                details = ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
        if identity in ALLOWED[method]:
            assert code is not grpc.StatusCode.PERMISSION_DENIED, (identity, method, details)
            assert code is not grpc.StatusCode.UNAUTHENTICATED, (identity, method, details)
        else:
            assert code is grpc.StatusCode.PERMISSION_DENIED, (identity, method, code)
            assert "needs role" in details and f"{identity} has roles:" in details, details
            # The missing role is named: admin where only admin may, else one of the others.
            assert "admin" in details


def test_audit_records_the_authenticated_identity_beside_the_claim(
    tls_cluster: Cluster, pki: ClusterPKI
) -> None:
    with connected(tls_cluster, pki, "sam") as sam:
        job_id = _submit(sam, _spec(tls_cluster, requested_by="the-boss"))
        job = sam.jobs.GetJob(services_pb2.GetJobRequest(job_id=job_id), timeout=10)
    assert job.spec.audit.requested_by == "sam"
    assert job.spec.audit.tags["h2k.claimed_requested_by"] == "the-boss"
    assert job.history[0].reason == "spec valid; submitted by sam"


def test_submitters_cancel_only_their_own_jobs(tls_cluster: Cluster, pki: ClusterPKI) -> None:
    queued = {"capability_requirements": {"needs_nbd": True}}  # no agent has nbd: stays QUEUED
    with connected(tls_cluster, pki, "sam") as sam, connected(tls_cluster, pki, "sue") as sue:
        sams = _submit(sam, _spec(tls_cluster, **queued))
        sues = _submit(sue, _spec(tls_cluster, **queued))
        with pytest.raises(grpc.RpcError) as caught:
            sue.jobs.CancelJob(services_pb2.CancelJobRequest(job_id=sams), timeout=10)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "submitted by sam" in caught.value.details()
        assert "needs role admin" in caught.value.details()
        still = sam.jobs.GetJob(services_pb2.GetJobRequest(job_id=sams), timeout=10)
        assert still.state != CANCELLED
        cancelled = sam.jobs.CancelJob(services_pb2.CancelJobRequest(job_id=sams), timeout=10)
        assert cancelled.state == CANCELLED
    with connected(tls_cluster, pki, "admin") as admin:
        ended = admin.jobs.CancelJob(services_pb2.CancelJobRequest(job_id=sues), timeout=10)
        assert ended.state == CANCELLED


def test_service_account_token_on_the_token_port(
    tls_cluster: Cluster, pki: ClusterPKI, token_address: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(CI_TOKEN + "\n")
    doc = job_spec(
        image=tls_cluster.input_dir / "roles" / "absent.vmdk",
        output=tls_cluster.output_dir,
        capability_requirements={"needs_nbd": True},
    )
    job_file = tls_cluster.write_job(doc)
    base = [str(BIN / "h2kctl"), "--server", token_address, "--tls-ca", str(pki.ca.cert)]
    submit = _run([*base, "--token-file", str(token_file), "submit", str(job_file)])
    assert submit.returncode == 0, submit.stderr
    got = _run([*base, "--token-file", str(token_file), "get", doc["job_id"], "-o", "json"])
    assert json.loads(got.stdout)["spec"]["audit"]["requested_by"] == "ci-bot"
    denied = _run([*base, "--token-file", str(token_file), "agents", "cordon", "node-1"])
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr and "needs role admin" in denied.stderr
    token_file.write_text("a-guess\n")
    guessed = _run([*base, "--token-file", str(token_file), "list"])
    assert guessed.returncode == 1 and "UNAUTHENTICATED" in guessed.stderr
    _run([*base, "--token-file", str(token_file), "cancel", doc["job_id"]])
    tls_cluster.h2kctl("cancel", doc["job_id"], check=True)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _probe_watch(stubs: Stubs, job_id: str) -> grpc.StatusCode:
    """Open one more WatchJob for a second; how did it end?"""
    try:
        list(stubs.jobs.WatchJob(services_pb2.WatchJobRequest(job_id=job_id), timeout=1.0))
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_too_many_streams_from_one_client_are_refused_while_others_work(
    tls_cluster: Cluster, pki: ClusterPKI
) -> None:
    with connected(tls_cluster, pki, "admin") as admin:
        job_id = _submit(admin, _spec(tls_cluster, capability_requirements={"needs_nbd": True}))
    with connected(tls_cluster, pki, "vera") as vera, connected(tls_cluster, pki, "sam") as sam:
        request = services_pb2.WatchJobRequest(job_id=job_id)
        streams: list = []

        def saturated() -> bool:
            # Streams start asynchronously: a probe may overtake one and take its slot, which
            # then gets refused. Keep MAX_STREAMS open until one more is refused.
            streams[:] = [stream for stream in streams if stream.running()]
            while len(streams) < MAX_STREAMS:
                streams.append(vera.jobs.WatchJob(request))
            return _probe_watch(vera, job_id) is grpc.StatusCode.RESOURCE_EXHAUSTED

        wait_for(saturated, timeout=20, what="RESOURCE_EXHAUSTED for one stream too many")
        assert [stream.running() for stream in streams] == [True] * MAX_STREAMS
        # Another client can still watch, and vera's unary calls still work.
        assert _probe_watch(sam, job_id) is grpc.StatusCode.DEADLINE_EXCEEDED
        assert vera.jobs.GetJob(services_pb2.GetJobRequest(job_id=job_id), timeout=10).spec
        streams.pop().cancel()
        wait_for(
            lambda: _probe_watch(vera, job_id) is grpc.StatusCode.DEADLINE_EXCEEDED,
            timeout=15,
            what="a stream slot freed",
        )
        for stream in streams:
            stream.cancel()
    with connected(tls_cluster, pki, "admin") as admin:
        admin.jobs.CancelJob(services_pb2.CancelJobRequest(job_id=job_id), timeout=10)


def test_a_wave_records_the_authenticated_identity_for_every_job(
    tls_cluster: Cluster, pki: ClusterPKI
) -> None:
    specs = [_spec(tls_cluster, requested_by="the-boss") for _ in range(2)]
    with connected(tls_cluster, pki, "sam") as sam:
        reply = sam.jobs.SubmitJobs(services_pb2.SubmitJobsRequest(specs=specs), timeout=10)
    assert [r.job.spec.audit.requested_by for r in reply.results] == ["sam", "sam"]
    assert {r.job.spec.audit.tags["h2k.claimed_requested_by"] for r in reply.results} == {
        "the-boss"
    }
