"""Keeps this agent registered with the control plane: register, then heartbeat.

Registration retries with capped exponential backoff until the control plane answers. Then a
heartbeat goes out every ``heartbeat_interval_seconds`` (from the control plane's answer) with
the running job ids and fresh memory/disk figures. The agent registers again when the control
plane says ``reregister``, answers NOT_FOUND, or has been unreachable for several heartbeats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from protocol.gen.h2k.v1 import agent_pb2, services_pb2, services_pb2_grpc

log = logging.getLogger(__name__)

RPC_TIMEOUT_SECONDS = 5.0
BACKOFF_START_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0
DEFAULT_HEARTBEAT_SECONDS = 10
FAILED_HEARTBEATS_BEFORE_REREGISTER = 3
# For the channel to the control plane: grpc's reconnect backoff grows to 120 s by default,
# so after a long control-plane outage the agent could miss its lease once it is back.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class AgentIdentity:
    name: str
    address: str
    max_concurrent_jobs: int
    version: str


class Registrar:
    """Runs the register/heartbeat loop until cancelled."""

    def __init__(
        self,
        stub: services_pb2_grpc.AgentRegistryStub,
        identity: AgentIdentity,
        *,
        capabilities: Callable[[], agent_pb2.Capabilities],
        running_job_ids: Callable[[], list[str]],
        on_registered: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._stub = stub
        self._identity = identity
        self._capabilities = capabilities
        self._running_job_ids = running_job_ids
        self._on_registered = on_registered
        self.registered = False
        # Once the control plane told us how often to report, registration retries never
        # wait longer than that: a restarted control plane must hear from us within its lease.
        self._backoff_max = BACKOFF_MAX_SECONDS

    async def run(self) -> None:
        """Register, heartbeat, and register again whenever the control plane lost us."""
        while True:
            interval = await self._register_until_accepted()
            self._backoff_max = min(BACKOFF_MAX_SECONDS, float(interval))
            self.registered = True
            if self._on_registered is not None:
                await self._on_registered()
            await self._heartbeat_until_lost(interval)
            self.registered = False

    async def _register_until_accepted(self) -> int:
        delay = BACKOFF_START_SECONDS
        ident = self._identity
        while True:
            request = services_pb2.RegisterAgentRequest(
                name=ident.name,
                address=ident.address,
                capabilities=self._capabilities(),
                max_concurrent_jobs=ident.max_concurrent_jobs,
                version=ident.version,
                running_job_ids=self._running_job_ids(),
            )
            try:
                response = await self._stub.RegisterAgent(request, timeout=RPC_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "registration failed name=%s code=%s detail=%s retry_in=%.1fs",
                    ident.name,
                    exc.code().name,
                    exc.details(),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            interval = response.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_SECONDS
            log.info(
                "registered with the control plane name=%s address=%s heartbeat_interval=%ds "
                "running_jobs=%s",
                ident.name,
                ident.address,
                interval,
                ",".join(request.running_job_ids) or "none",
            )
            return interval

    async def _heartbeat_until_lost(self, interval: int) -> None:
        failures = 0
        while True:
            await asyncio.sleep(interval)
            request = services_pb2.HeartbeatRequest(
                name=self._identity.name,
                running_job_ids=self._running_job_ids(),
                capabilities=self._capabilities(),
            )
            try:
                response = await self._stub.Heartbeat(request, timeout=RPC_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.NOT_FOUND:
                    log.warning("control plane does not know this agent; registering again")
                    return
                failures += 1
                log.warning(
                    "heartbeat failed code=%s detail=%s failures=%d",
                    code.name,
                    exc.details(),
                    failures,
                )
                if failures >= FAILED_HEARTBEATS_BEFORE_REREGISTER:
                    return
                continue
            failures = 0
            if response.reregister:
                log.info("control plane asked this agent to register again")
                return
            interval = response.heartbeat_interval_seconds or interval
