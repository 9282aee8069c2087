"""JobService and AgentRegistry over real gRPC, with the real SQLite store, no agent running."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protocol.gen.h2k.v1 import agent_pb2, job_pb2, services_pb2

INVALID_SPECS = [
    pytest.param(
        {"execution_policy": {"priority": 11}},
        "execution_policy.priority: must be between 1 and 10",
        id="priority",
    ),
    pytest.param({"audit": {"ticket": "MIG-1"}}, "audit.requested_by: is required", id="audit"),
    pytest.param(
        {"image": {"path": "data/vm.vmdk"}}, "image.path: must be an absolute path", id="relative"
    ),
    pytest.param(
        {"image": {"path": "/data/vm.vmdk", "checksum": "md5:abc"}},
        "image.checksum: must be 'sha256:' followed by 64 lower-case hex digits",
        id="checksum",
    ),
    pytest.param(
        {"execution_policy": {"retry_count": 6}},
        "execution_policy.retry_count: must be between 0 and 5",
        id="retry_count",
    ),
    pytest.param(
        {"execution_policy": {"timeout_seconds": 59}},
        "execution_policy.timeout_seconds: must be between 60 and 86400",
        id="timeout",
    ),
    pytest.param(
        {"parameters": {"output_format": "vmdk"}}, "parameters.output_format:", id="output_format"
    ),
]


@pytest.mark.parametrize(("sections", "message"), INVALID_SPECS)
async def test_an_invalid_spec_is_refused_naming_its_field(
    start_control_plane, kit, sections, message
):
    async with start_control_plane() as cp:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cp.submit(kit.job_document("bad", **sections))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in refused.value.details()
        # The server keeps answering, and stored nothing.
        answer = await cp.jobs.ListJobs(services_pb2.ListJobsRequest())
        assert list(answer.jobs) == []


async def test_every_problem_is_named_at_once(start_control_plane, kit):
    document = kit.job_document("bad", execution_policy={"priority": 0, "retry_count": 9})
    del document["audit"]
    async with start_control_plane() as cp:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cp.submit(document)
    details = refused.value.details()
    assert "execution_policy.priority" in details
    assert "execution_policy.retry_count" in details
    assert "audit: is required" in details


async def test_an_unknown_field_is_refused(start_control_plane, kit):
    async with start_control_plane() as cp:
        spec = kit.spec_message(kit.job_document("newer-client"), unknown_field=99)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cp.jobs.SubmitJob(services_pb2.SubmitJobRequest(spec=spec))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "spec: field number 99 is not a v1 field"
        ok = await cp.submit(kit.job_document("fine"))
    assert ok.created


async def test_resubmission_is_idempotent_by_job_id(start_control_plane, kit):
    async with start_control_plane() as cp:
        first = await cp.submit(kit.job_document("job-1"))
        again = await cp.submit(kit.job_document("job-1"))
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await cp.submit(kit.job_document("job-1", execution_policy={"priority": 1}))
    assert first.created and not again.created
    assert again.job.submitted_at == first.job.submitted_at
    assert again.job.spec == first.job.spec
    assert first.job.spec.HasField("created_at")
    assert conflict.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert conflict.value.details() == "job_id: job job-1 already exists with a different spec"


async def test_a_queued_job_shows_why_it_waits(start_control_plane, kit):
    async with start_control_plane() as cp:
        submitted = await cp.submit(kit.job_document("job-1"))
        assert submitted.job.state == job_pb2.JOB_STATE_QUEUED
        states = [(t.from_state, t.to_state) for t in submitted.job.history]
        assert states == [
            (job_pb2.JOB_STATE_CREATED, job_pb2.JOB_STATE_VALIDATED),
            (job_pb2.JOB_STATE_VALIDATED, job_pb2.JOB_STATE_QUEUED),
        ]

        async def reason():
            return (await cp.job("job-1")).queue_reason

        assert await kit.eventually(reason, "a queue reason") == "no agent registered"
        await cp.registry.RegisterAgent(
            services_pb2.RegisterAgentRequest(
                name="node-1", address="127.0.0.1:9", max_concurrent_jobs=1
            )
        )

        async def capability_reason():
            text = (await cp.job("job-1")).queue_reason
            return text if text != "no agent registered" else None

        assert await kit.eventually(capability_reason, "a new reason") == "no agent has qemu_img"


async def test_cancelling_a_queued_job_ends_it_at_once(start_control_plane, kit):
    async with start_control_plane() as cp:
        await cp.submit(kit.job_document("job-1"))
        cancelled = await cp.jobs.CancelJob(
            services_pb2.CancelJobRequest(job_id="job-1", reason="wrong image")
        )
        assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
        assert cancelled.history[-1].reason == "wrong image"
        assert cancelled.result.error.code == "CANCELLED"
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await cp.jobs.CancelJob(services_pb2.CancelJobRequest(job_id="job-1"))
        assert again.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert again.value.details() == "job job-1 is already CANCELLED"
        # Watching a job that already ended replays nothing and ends.
        events = [e async for e in cp.jobs.WatchJob(services_pb2.WatchJobRequest(job_id="job-1"))]
    assert events == []


async def test_unknown_jobs_and_agents_are_not_found(start_control_plane):
    async with start_control_plane() as cp:
        calls = [
            cp.jobs.GetJob(services_pb2.GetJobRequest(job_id="nope")),
            cp.jobs.CancelJob(services_pb2.CancelJobRequest(job_id="nope")),
            cp.jobs.ListJobEvents(services_pb2.ListJobEventsRequest(job_id="nope")),
            cp.registry.CordonAgent(services_pb2.CordonAgentRequest(name="nope", cordon=True)),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await call
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            async for _ in cp.jobs.WatchJob(services_pb2.WatchJobRequest(job_id="nope")):
                pass
        assert watched.value.code() is grpc.StatusCode.NOT_FOUND
        assert watched.value.details() == "job nope not found"


async def test_jobs_are_listed_in_pages_and_by_state(start_control_plane, kit):
    async with start_control_plane() as cp:
        for i in range(5):
            await cp.submit(kit.job_document(f"job-{i}"))
        await cp.jobs.CancelJob(services_pb2.CancelJobRequest(job_id="job-0"))
        first = await cp.jobs.ListJobs(services_pb2.ListJobsRequest(page_size=3))
        rest = await cp.jobs.ListJobs(
            services_pb2.ListJobsRequest(page_size=3, page_token=first.next_page_token)
        )
        queued = await cp.jobs.ListJobs(
            services_pb2.ListJobsRequest(states=[job_pb2.JOB_STATE_QUEUED])
        )
    assert [j.spec.job_id for j in first.jobs] == ["job-0", "job-1", "job-2"]
    assert [j.spec.job_id for j in rest.jobs] == ["job-3", "job-4"]
    assert rest.next_page_token == ""
    assert [j.spec.job_id for j in queued.jobs] == ["job-1", "job-2", "job-3", "job-4"]


async def test_agents_register_heartbeat_and_are_cordoned(start_control_plane):
    async with start_control_plane() as cp:
        registered = await cp.registry.RegisterAgent(
            services_pb2.RegisterAgentRequest(
                name="node-1", address="127.0.0.1:9", max_concurrent_jobs=2, version="0.1"
            )
        )
        assert (registered.heartbeat_interval_seconds, registered.lease_seconds) == (5, 15)
        beat = await cp.registry.Heartbeat(services_pb2.HeartbeatRequest(name="node-1"))
        stranger = await cp.registry.Heartbeat(services_pb2.HeartbeatRequest(name="node-9"))
        assert not beat.reregister and stranger.reregister

        cordoned = await cp.registry.CordonAgent(
            services_pb2.CordonAgentRequest(name="node-1", cordon=True)
        )
        assert cordoned.state == agent_pb2.AGENT_STATE_CORDONED
        await cp.registry.RegisterAgent(
            services_pb2.RegisterAgentRequest(
                name="node-1", address="127.0.0.1:9", max_concurrent_jobs=2
            )
        )
        listed = await cp.registry.ListAgents(services_pb2.ListAgentsRequest())
        assert [(a.name, a.state) for a in listed.agents] == [
            ("node-1", agent_pb2.AGENT_STATE_CORDONED)
        ]
        drained = await cp.registry.DrainAgent(
            services_pb2.DrainAgentRequest(name="node-1", deadline_seconds=60)
        )
        assert drained.state == agent_pb2.AGENT_STATE_DRAINING
        assert drained.HasField("drain_deadline")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cp.registry.RegisterAgent(services_pb2.RegisterAgentRequest(name=""))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "address: must not be empty" in refused.value.details()


async def test_health_reports_serving(start_control_plane):
    async with start_control_plane() as cp:
        health = health_pb2_grpc.HealthStub(cp.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service="h2k.v1.JobService"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
