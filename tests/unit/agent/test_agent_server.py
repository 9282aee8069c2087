"""The agent's gRPC surface in-process: registration, health, Worker RPCs, shutdown.

A minimal AgentRegistry stands in for the control plane (it only records what it is told).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.server import AgentConfig, serve
from protocol.gen.h2k.v1 import (
    agent_pb2,
    job_pb2,
    services_pb2,
    services_pb2_grpc,
)
from tests.unit.agent.builders import AgentDirs, job_spec, make_disk


@dataclass
class RecordingRegistry(services_pb2_grpc.AgentRegistryServicer):
    registrations: list[services_pb2.RegisterAgentRequest] = field(default_factory=list)
    heartbeats: list[services_pb2.HeartbeatRequest] = field(default_factory=list)

    async def RegisterAgent(self, request, context):
        self.registrations.append(request)
        return services_pb2.RegisterAgentResponse(heartbeat_interval_seconds=1, lease_seconds=5)

    async def Heartbeat(self, request, context):
        self.heartbeats.append(request)
        # The first heartbeat pretends the control plane restarted and forgot the agent.
        return services_pb2.HeartbeatResponse(
            heartbeat_interval_seconds=1, reregister=len(self.heartbeats) == 1
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _poll(condition, seconds: float = 15.0) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running_agent(
    dirs: AgentDirs, registry: RecordingRegistry, shutdown_grace_seconds: float = 25.0
) -> AsyncIterator[grpc.aio.Channel]:
    cp = grpc.aio.server()
    services_pb2_grpc.add_AgentRegistryServicer_to_server(registry, cp)
    cp_port = cp.add_insecure_port("127.0.0.1:0")
    await cp.start()
    listen = f"127.0.0.1:{_free_port()}"
    config = AgentConfig(
        control_plane=f"127.0.0.1:{cp_port}",
        listen=listen,
        node_name="node-test",
        state_dir=dirs.state,
        allow_input=[dirs.input],
        allow_output=[dirs.output],
        max_concurrent_jobs=2,
        shutdown_grace_seconds=shutdown_grace_seconds,
    )
    stop = asyncio.Event()
    agent = asyncio.create_task(serve(config, stop))
    channel = grpc.aio.insecure_channel(listen)
    health = health_pb2_grpc.HealthStub(channel)

    async def serving() -> bool:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    try:
        await _poll(serving)
        yield channel
    finally:
        stop.set()
        await asyncio.wait_for(agent, 30)
        await channel.close(None)
        await cp.stop(None)


def test_agent_registers_serves_jobs_and_replays_logs(dirs: AgentDirs) -> None:
    source = make_disk(dirs.input / "vm.vmdk", size="8M", writes=("0x5a 0 1M",))
    registry = RecordingRegistry()

    async def scenario() -> None:
        async with running_agent(dirs, registry) as channel:
            worker = services_pb2_grpc.WorkerStub(channel)
            registration = registry.registrations[0]
            assert registration.name == "node-test" and registration.max_concurrent_jobs == 2
            assert {p.name for p in registration.capabilities.probes} >= {"qemu_img", "kvm"}

            caps = await worker.GetCapabilities(services_pb2.GetCapabilitiesRequest())
            assert caps.level != agent_pb2.CAPABILITY_LEVEL_UNSPECIFIED

            request = services_pb2.ExecuteJobRequest(spec=job_spec(dirs, source), attempt=1)
            events = [e async for e in worker.ExecuteJob(request)]
            assert events[-1].state == job_pb2.JOB_STATE_COMPLETED
            assert (dirs.output / "vm.qcow2").exists()

            replay = worker.AttachJob(services_pb2.AttachJobRequest(job_id="job-1", after_seq=2))
            assert [e async for e in replay] == events[2:]

            with pytest.raises(grpc.aio.AioRpcError) as exc:
                unknown = services_pb2.AttachJobRequest(job_id="nope")
                _ = [e async for e in worker.AttachJob(unknown)]
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND

            bad = services_pb2.ExecuteJobRequest(spec=job_pb2.JobSpec(job_id="x"))
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                _ = [e async for e in worker.ExecuteJob(bad)]
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "audit: is required" in (exc.value.details() or "")

            cancel = services_pb2.WorkerCancelJobRequest(job_id="nope")
            assert not (await worker.CancelJob(cancel)).found
            done = await worker.CancelJob(services_pb2.WorkerCancelJobRequest(job_id="job-1"))
            assert done.found and done.state == job_pb2.JOB_STATE_COMPLETED

            # reregister on the first heartbeat -> a second registration, then heartbeats.
            async def reregistered() -> bool:
                return len(registry.registrations) >= 2 and len(registry.heartbeats) >= 2

            await _poll(reregistered)

    asyncio.run(scenario())


def test_shutdown_past_its_grace_cancels_running_jobs_and_streams_their_end(
    dirs: AgentDirs,
) -> None:
    source = dirs.input / "big.img"
    with source.open("wb") as handle:
        for _ in range(256):
            handle.write(b"\xab" * 1024 * 1024)
    spec = job_spec(dirs, source, fmt="raw", job_id="slow")
    registry = RecordingRegistry()

    async def scenario() -> list[job_pb2.ProgressEvent]:
        events: list[job_pb2.ProgressEvent] = []
        async with running_agent(dirs, registry, shutdown_grace_seconds=0) as channel:
            worker = services_pb2_grpc.WorkerStub(channel)
            stream = worker.ExecuteJob(services_pb2.ExecuteJobRequest(spec=spec, attempt=1))
            async for event in stream:
                events.append(event)
                if event.phase == "convert":
                    break
            collector = asyncio.create_task(_drain(stream, events))
        await asyncio.wait_for(collector, 30)
        return events

    events = asyncio.run(scenario())
    final = events[-1]
    # FAILED with AGENT_SHUTDOWN: the control plane requeues it (not the user's cancel).
    assert final.state == job_pb2.JOB_STATE_FAILED
    assert final.result.error.code == "AGENT_SHUTDOWN"
    assert final.result.error.message.startswith("agent node-test shut down during convert at")
    assert not [p for p in dirs.output.iterdir()], "temporary output removed"


async def _drain(stream, events: list[job_pb2.ProgressEvent]) -> None:
    async for event in stream:
        events.append(event)
