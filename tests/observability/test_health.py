"""grpc.health.v1 says SERVING only once a server can do its work, and flips when it can."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.server import ControlPlane, ControlPlaneConfig
from devsupport.cluster import BIN, Cluster, Process, free_port, wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(address: str, service: str = "") -> int | None:
    """The health status, or None while nothing answers."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.RpcError:
            return None
        return int(reply.status)


def test_agent_is_not_serving_until_registered(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)  # the control plane is not started yet
    address = f"127.0.0.1:{free_port()}"
    probe = f"127.0.0.1:{free_port()}"  # the plaintext health-only port (Kubernetes probes)
    argv = [
        str(BIN / "h2k-agent"),
        *("--control-plane", cluster.address, "--listen", address, "--node-name", "node-1"),
        *("--state-dir", str(tmp_path / "node-1"), "--allow-input", str(cluster.input_dir)),
        *("--allow-output", str(cluster.output_dir), "--insecure", "--health-listen", probe),
    ]
    agent = Process("node-1", argv, tmp_path / "node-1.log")
    agent.start()
    try:
        # Answering at all means capability detection is over; nobody registered it yet.
        assert wait_for(lambda: _status(address) is not None, what="agent health") is not None
        assert _status(address) == NOT_SERVING
        assert _status(address, "h2k.v1.Worker") == NOT_SERVING
        assert _status(address, "liveness") == SERVING
        assert _status(probe) == NOT_SERVING and _status(probe, "liveness") == SERVING
        cluster.start_controlplane()
        wait_for(lambda: _status(address) == SERVING, what="agent SERVING once registered")
        assert _status(address, "h2k.v1.Worker") == SERVING
        assert _status(probe) == SERVING
    finally:
        agent.stop()
        cluster.stop()
    assert agent.popen is not None and agent.popen.returncode == 0


async def test_control_plane_is_not_serving_until_its_store_is_open(tmp_path: Path) -> None:
    port = free_port()
    control_plane = ControlPlane(
        ControlPlaneConfig(listen=f"127.0.0.1:{port}", db_url=f"sqlite:///{tmp_path}/h2k.db")
    )
    store_may_open = asyncio.Event()
    open_store = control_plane.store.open

    async def slow_open() -> None:
        await store_may_open.wait()
        await open_store()

    control_plane.store.open = slow_open  # type: ignore[method-assign]
    starting = asyncio.create_task(control_plane.start())
    address = f"127.0.0.1:{port}"
    try:
        # The gRPC port answers before the store is open: health says NOT_SERVING.
        status = await asyncio.to_thread(
            wait_for, lambda: _status(address) is not None, what="control-plane health"
        )
        assert status is True
        assert await asyncio.to_thread(_status, address) == NOT_SERVING
        assert await asyncio.to_thread(_status, address, "h2k.v1.JobService") == NOT_SERVING
        store_may_open.set()
        await starting
        assert await asyncio.to_thread(_status, address) == SERVING
        assert await asyncio.to_thread(_status, address, "h2k.v1.AgentRegistry") == SERVING
    finally:
        store_may_open.set()
        await starting
        await control_plane.stop()
