"""Channels from the control plane to the agents' Worker services, one per address."""

from __future__ import annotations

import logging

import grpc

from protocol.gen.h2k.v1 import services_pb2, services_pb2_grpc

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_SECONDS = 5.0


class WorkerClients:
    """Caches one insecure grpc.aio channel per agent address."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> services_pb2_grpc.WorkerStub:
        """A Worker stub on the (cached) channel to ``address``."""
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address)
            self._channels[address] = channel
            log.info("worker channel opened address=%s", address)
        return services_pb2_grpc.WorkerStub(channel)

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
            await channel.close(None)
