"""The control-plane server: both servicers, health, reflection, dispatcher, graceful stop."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from controlplane.agent_registry import AgentRegistry
from controlplane.dispatcher import Dispatcher, DispatchPolicy
from controlplane.events import DEFAULT_BUFFER, EventHub
from controlplane.job_service import JobService
from controlplane.store import JobStore, store_for_url
from protocol.gen.h2k.v1 import services_pb2, services_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = tuple(
    services_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("JobService", "AgentRegistry")
)


@dataclass(frozen=True)
class ControlPlaneConfig:
    """How to run the control plane."""

    listen: str
    db_url: str
    heartbeat_interval_seconds: int = 5
    lease_seconds: int = 15
    tick_seconds: float = 1.0
    reattach_delays: Sequence[float] = field(default=(0.0, 0.5, 1.0, 2.0, 4.0))
    # How long in-flight RPCs (WatchJob streams above all) may finish on stop.
    grace_seconds: float = 5.0
    # Live events buffered per watcher before it is marked lagged and re-reads the store.
    watch_buffer: int = DEFAULT_BUFFER


class ControlPlane:
    """One running control plane; ``start`` then ``stop``."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.port = 0
        self._server = grpc.aio.server()
        self._health = health_aio.HealthServicer()
        self._store: JobStore = store_for_url(config.db_url)
        self._hub = EventHub(config.watch_buffer)
        policy = DispatchPolicy(
            tick_seconds=config.tick_seconds,
            lease=timedelta(seconds=config.lease_seconds),
            reattach_delays=config.reattach_delays,
        )
        self.dispatcher = Dispatcher(self._store, self._hub, policy)
        self._add_services()

    @property
    def store(self) -> JobStore:
        return self._store

    def _add_services(self) -> None:
        services_pb2_grpc.add_JobServiceServicer_to_server(
            JobService(self._store, self._hub, self.dispatcher), self._server
        )
        registry = AgentRegistry(
            self._store,
            self.dispatcher,
            heartbeat_interval_seconds=self.config.heartbeat_interval_seconds,
            lease_seconds=self.config.lease_seconds,
        )
        services_pb2_grpc.add_AgentRegistryServicer_to_server(registry, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), self._server)

    async def start(self) -> int:
        """Listen, open the store, resume running jobs, then report SERVING.

        Returns:
            The port bound (useful when listening on port 0).
        """
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self._server.add_insecure_port(self.config.listen)
        await self._server.start()
        await self._store.open()
        await self.dispatcher.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "control plane serving listen=%s port=%d db=%s",
            self.config.listen,
            self.port,
            self.config.db_url,
        )
        return self.port

    async def stop(self) -> None:
        """Refuse new RPCs, give streams the grace period, then release everything."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.config.grace_seconds)
        await self.dispatcher.stop()
        await self._store.close()
        log.info("control plane stopped listen=%s", self.config.listen)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)
