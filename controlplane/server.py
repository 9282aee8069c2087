"""The control-plane server: both servicers, health, reflection, dispatcher, graceful stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from controlplane.agent_registry import AgentRegistry
from controlplane.auth import DEFAULT_MAX_STREAMS_PER_CLIENT, AuthInterceptor, RoleBook
from controlplane.dispatch.dispatcher import Dispatcher
from controlplane.dispatch.policy import DispatchPolicy
from controlplane.events import DEFAULT_BUFFER, EventHub
from controlplane.job_service import JobService
from controlplane.metrics import RpcMetricsInterceptor, register_store_collector
from controlplane.migrations.driver import MigrationDriver
from controlplane.migrations.service import MigrationService
from controlplane.store import JobStore, store_for_url
from controlplane.worker_client import WorkerClients
from protocol.gen.h2k.v1 import migration_pb2, migration_pb2_grpc, services_pb2, services_pb2_grpc
from runtime.health import MetricsServer, start_health_server
from runtime.tls import SERVER_OPTIONS, ReloadingTLS, TLSFiles, server_credentials
from runtime.tracing import server_interceptors

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    *(
        services_pb2.DESCRIPTOR.services_by_name[name].full_name
        for name in ("JobService", "AgentRegistry")
    ),
    migration_pb2.DESCRIPTOR.services_by_name["MigrationService"].full_name,
)


@dataclass(frozen=True)
class ControlPlaneConfig:
    """How to run the control plane."""

    listen: str
    db_url: str
    heartbeat_interval_seconds: int = 5
    lease_seconds: int = 15
    tick_seconds: float = 1.0
    reattach_delays: Sequence[float] = DispatchPolicy.reattach_delays
    # How long in-flight RPCs (WatchJob streams above all) may finish on stop.
    grace_seconds: float = 5.0
    # Live events buffered per watcher before it is marked lagged and re-reads the store.
    watch_buffer: int = DEFAULT_BUFFER
    # Mutual TLS for clients and for the channels to agents; None serves plaintext, and every
    # caller is then an anonymous admin (--insecure).
    tls: TLSFiles | None = None
    roles: RoleBook = field(default_factory=RoleBook)
    max_streams_per_client: int = DEFAULT_MAX_STREAMS_PER_CLIENT
    # A second TLS port that asks for no client certificate: service accounts with bearer
    # tokens (grpc cannot make the client certificate optional on one port).
    token_listen: str | None = None
    # Reliability (see controlplane/leases.py and controlplane/retry.py).
    timeout_margin_seconds: float = DispatchPolicy.timeout_margin.total_seconds()
    timeout_scale: float = 1.0  # for tests only: scales every job's timeout_seconds
    retry_backoff_seconds: float = DispatchPolicy.retry_backoff.total_seconds()
    # Prometheus /metrics on HOST:PORT (None: no metrics endpoint).
    metrics_listen: str | None = None
    # A plaintext port serving only grpc.health.v1 (Kubernetes probes cannot do TLS).
    health_listen: str | None = None
    # Several replicas on PostgreSQL: how soon another replica takes over the streams (and
    # the scheduler role) of one that stopped renewing them.
    stream_lease_seconds: float = DispatchPolicy.stream_lease.total_seconds()


class ControlPlane:
    """One running control plane; ``start`` then ``stop``."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.port = 0
        self.token_port = 0
        self._tls = ReloadingTLS(config.tls) if config.tls is not None else None
        auth = AuthInterceptor(
            config.roles if self._tls is not None else None, config.max_streams_per_client
        )
        # Tracing outermost (its span covers everything), then metrics (refusals count too).
        interceptors = [*server_interceptors(), RpcMetricsInterceptor(), auth]
        self._server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
        self._metrics: MetricsServer | None = None
        self._health_server: grpc.aio.Server | None = None
        self._unregister_metrics: Callable[[], None] | None = None
        self._health = health_aio.HealthServicer()
        self._store: JobStore = store_for_url(config.db_url)
        self._hub = EventHub(config.watch_buffer)
        policy = DispatchPolicy(
            tick_seconds=config.tick_seconds,
            lease=timedelta(seconds=config.lease_seconds),
            reattach_delays=config.reattach_delays,
            timeout_margin=timedelta(seconds=config.timeout_margin_seconds),
            timeout_scale=config.timeout_scale,
            retry_backoff=timedelta(seconds=config.retry_backoff_seconds),
            stream_lease=timedelta(seconds=config.stream_lease_seconds),
        )
        self.dispatcher = Dispatcher(self._store, self._hub, policy, WorkerClients(self._tls))
        self.migrations = MigrationDriver(
            self._store, self.dispatcher, self.dispatcher.leads_scheduling, config.tick_seconds
        )
        self.dispatcher.on_job_moved(self.migrations.wake)
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
        migration_pb2_grpc.add_MigrationServiceServicer_to_server(
            MigrationService(self._store, self.migrations.wake), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), self._server)

    async def start(self) -> int:
        """Listen, open the store, resume running jobs, then report SERVING.

        Returns:
            The port bound (useful when listening on port 0).
        """
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.config.metrics_listen is not None:
            self._metrics = MetricsServer(self.config.metrics_listen)
        if self._tls is None:
            self.port = self._server.add_insecure_port(self.config.listen)
        else:
            self.port = self._server.add_secure_port(
                self.config.listen, server_credentials(self._tls)
            )
            if self.config.token_listen is not None:
                self.token_port = self._server.add_secure_port(
                    self.config.token_listen,
                    server_credentials(self._tls, require_client_certificate=False),
                )
        await self._server.start()
        if self.config.health_listen is not None:
            self._health_server = await start_health_server(self.config.health_listen, self._health)
        await self._store.open()
        # Events other replicas store reach this replica's watchers (PostgreSQL only).
        self._store.start_change_feed(self._hub.remote_change, self._hub.set_remote_changes_heard)
        self._unregister_metrics = register_store_collector(
            self._store,
            asyncio.get_running_loop(),
            timedelta(seconds=self.config.lease_seconds),
        )
        await self.dispatcher.start()
        await self.migrations.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "control plane serving listen=%s port=%d db=%s tls=%s",
            self.config.listen,
            self.port,
            self.config.db_url,
            self._tls is not None,
        )
        return self.port

    async def stop(self) -> None:
        """Refuse new RPCs, give streams the grace period, then release everything."""
        await self._health.enter_graceful_shutdown()
        # Watch streams end now (UNAVAILABLE: clients reconnect, to another replica if any);
        # unary calls in flight get the grace period.
        self._hub.close()
        await self._server.stop(self.config.grace_seconds)
        if self._health_server is not None:
            await self._health_server.stop(None)
        await self.migrations.stop()
        await self.dispatcher.stop()
        if self._unregister_metrics is not None:
            self._unregister_metrics()
        if self._metrics is not None:
            self._metrics.stop()
        await self._store.close()
        log.info("control plane stopped listen=%s", self.config.listen)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)
