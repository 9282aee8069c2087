"""Channels from the control plane to the agents' Worker services, one per address."""

from __future__ import annotations

import logging

from protocol.gen.h2k.v1 import services_pb2, services_pb2_grpc
from runtime.channels import ReloadingChannel
from runtime.tls import ReloadingTLS

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_SECONDS = 5.0
# grpc's reconnect backoff grows to 120 s by default: a restarted agent would then stay
# unreachable (and its jobs un-followed) long after it is back. Retry connecting every 1 s.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class WorkerClients:
    """Caches one grpc.aio channel per agent address: mutual TLS with ``tls`` (our certificate
    is what the agents check), plaintext without; reopened when the TLS files rotate."""

    def __init__(self, tls: ReloadingTLS | None = None) -> None:
        self._tls = tls
        self._channels: dict[str, ReloadingChannel] = {}

    def stub(self, address: str) -> services_pb2_grpc.WorkerStub:
        """A Worker stub on the (cached) channel to ``address``."""
        channel = self._channels.get(address)
        if channel is None:
            channel = ReloadingChannel(address, self._tls, options=RECONNECT_OPTIONS)
            self._channels[address] = channel
            log.info("worker channel opened address=%s tls=%s", address, self._tls is not None)
        return services_pb2_grpc.WorkerStub(channel.get())

    async def cancel(
        self, address: str, job_id: str, reason: str
    ) -> services_pb2.WorkerCancelJobResponse:
        """Ask the agent at ``address`` to cancel a job.

        Raises:
            grpc.aio.AioRpcError: the agent could not be reached or refused.
        """
        request = services_pb2.WorkerCancelJobRequest(job_id=job_id, reason=reason)
        response: services_pb2.WorkerCancelJobResponse = await self.stub(address).CancelJob(
            request, timeout=CANCEL_TIMEOUT_SECONDS
        )
        return response

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
