"""Wiring: the agent's gRPC server, its registration loop, and an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from agent.auth import ControlPlaneOnly
from agent.capabilities import detect_capabilities, refresh_resources, summarize
from agent.events import EventLog
from agent.executor import Executor
from agent.metrics import NodeCollector, register_node_collector, temp_dirs
from agent.paths import PathPolicy
from agent.registration import CHANNEL_OPTIONS, AgentIdentity, Registrar
from agent.service import WorkerService
from protocol.gen.h2k.v1 import agent_pb2, services_pb2, services_pb2_grpc
from runtime.channels import ReloadingChannel, StubProxy
from runtime.health import MetricsServer, start_health_server
from runtime.tls import SERVER_OPTIONS, ReloadingTLS, TLSFiles, server_credentials
from runtime.tracing import server_interceptors

log = logging.getLogger(__name__)

WORKER_SERVICE = services_pb2.DESCRIPTOR.services_by_name["Worker"].full_name
STOP_GRACE_SECONDS = 5.0
# Health service name that is SERVING whenever the process serves (Kubernetes liveness).
LIVENESS_SERVICE = "liveness"


# qemu-img reports each 1 %: at 100 MB/s, 1 % of a 4 TB disk takes 400 s.
DEFAULT_STALL_SECONDS = 600.0


@dataclass(frozen=True)
class AgentConfig:
    control_plane: str
    listen: str
    node_name: str
    state_dir: Path
    allow_input: list[Path] = field(default_factory=list)
    allow_output: list[Path] = field(default_factory=list)
    max_concurrent_jobs: int = 2
    insecure: bool = True
    advertise_address: str | None = None
    # Mutual TLS both ways; Worker is served only to a peer with this SAN.
    tls: TLSFiles | None = None
    control_plane_identity: str = "h2k-controlplane"
    # On SIGTERM running jobs may finish for this long; the rest are cancelled and requeued.
    shutdown_grace_seconds: float = 25.0
    timeout_scale: float = 1.0  # for tests only: scales every job's timeout_seconds
    # A conversion whose progress does not move for this long is killed (None: never).
    stall_seconds: float | None = DEFAULT_STALL_SECONDS
    # Prometheus /metrics on HOST:PORT (None: no metrics endpoint).
    metrics_listen: str | None = None
    # A plaintext port serving only grpc.health.v1 (Kubernetes probes cannot do TLS).
    health_listen: str | None = None

    @property
    def address(self) -> str:
        """Where the control plane reaches this agent."""
        return self.advertise_address or self.listen


def agent_version() -> str:
    try:
        return importlib.metadata.version("h2k")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


class CapabilityView:
    """The capabilities detected at start, with memory and disk refreshed on every read."""

    def __init__(self, detected: agent_pb2.Capabilities, allow_output: list[Path]) -> None:
        self._caps = detected
        self._allow_output = allow_output

    def current(self) -> agent_pb2.Capabilities:
        caps = agent_pb2.Capabilities()
        caps.CopyFrom(self._caps)
        refresh_resources(caps, self._allow_output)
        return caps


async def serve(config: AgentConfig, stop: asyncio.Event) -> None:
    """Run the agent until ``stop`` is set, then shut down in order.

    Order on stop: health NOT_SERVING, running jobs cancelled (their terminal events still
    go out on open streams), registration stopped, server stopped with a grace period.
    """
    for directory in config.allow_input + config.allow_output:
        if not directory.is_dir():
            log.warning("allowed directory does not exist path=%s", directory)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    event_log = EventLog(config.state_dir)
    executor = Executor(
        node_name=config.node_name,
        policy=PathPolicy(config.allow_input, config.allow_output),
        event_log=event_log,
        state_dir=config.state_dir,
        max_concurrent_jobs=config.max_concurrent_jobs,
        timeout_scale=config.timeout_scale,
        stall_seconds=config.stall_seconds,
    )
    executor.recover()
    detected = await asyncio.to_thread(detect_capabilities, config.allow_output)
    capabilities = CapabilityView(detected, config.allow_output)

    health_servicer = health_aio.HealthServicer()
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    if config.tls is None and not config.insecure:
        raise SystemExit("no TLS material: give --tls-cert, --tls-key and --tls-ca, or --insecure")
    tls = ReloadingTLS(config.tls) if config.tls is not None else None
    # Tracing first: a refused call is traced too.
    interceptors = server_interceptors()
    if tls is not None:
        interceptors.append(ControlPlaneOnly(config.control_plane_identity))
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    services_pb2_grpc.add_WorkerServicer_to_server(
        WorkerService(executor, event_log, capabilities.current), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [WORKER_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    try:
        if tls is None:
            server.add_insecure_port(config.listen)
        else:
            server.add_secure_port(config.listen, server_credentials(tls))
    except RuntimeError as exc:
        raise SystemExit(f"cannot listen on {config.listen}: {exc}") from exc
    await server.start()
    # Liveness only says the process answers: readiness ("") waits for the control plane,
    # and an agent must not be restarted (killing its jobs) because the control plane is away.
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    metrics = MetricsServer(config.metrics_listen) if config.metrics_listen else None
    health_server = None
    if config.health_listen:
        health_server = await start_health_server(config.health_listen, health_servicer)
    unregister_metrics = register_node_collector(
        NodeCollector(
            config.node_name, lambda: detected, temp_dirs(config.state_dir, config.allow_output)
        )
    )
    log.info(
        "agent started node=%s listen=%s address=%s max_concurrent_jobs=%d %s",
        config.node_name,
        config.listen,
        config.address,
        config.max_concurrent_jobs,
        summarize(detected),
    )

    channel = ReloadingChannel(config.control_plane, tls, options=CHANNEL_OPTIONS)
    registrar = Registrar(
        StubProxy(channel, services_pb2_grpc.AgentRegistryStub),  # type: ignore[arg-type]
        AgentIdentity(
            name=config.node_name,
            address=config.address,
            max_concurrent_jobs=config.max_concurrent_jobs,
            version=agent_version(),
        ),
        capabilities=capabilities.current,
        running_job_ids=executor.running_job_ids,
        on_registered=lambda: _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING),
    )
    registration = asyncio.create_task(registrar.run(), name="registration")
    try:
        await stop.wait()
    finally:
        log.info(
            "agent stopping node=%s running_jobs=%s",
            config.node_name,
            ",".join(executor.running_job_ids()) or "none",
        )
        await health_servicer.enter_graceful_shutdown()
        await executor.shutdown(config.shutdown_grace_seconds)
        registration.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await registration
        await server.stop(STOP_GRACE_SECONDS)
        await channel.close()
        unregister_metrics()
        if metrics is not None:
            metrics.stop()
        if health_server is not None:
            await health_server.stop(None)
        log.info("agent stopped node=%s", config.node_name)


async def _set_health(servicer: health_aio.HealthServicer, status: int) -> None:
    for service in ("", WORKER_SERVICE):
        await servicer.set(service, status)
