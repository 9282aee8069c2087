"""Only the control plane may drive this agent.

With mutual TLS the transport already refuses peers without a certificate from our CA. The
``Worker`` service goes one step further: the peer's certificate must carry the control
plane's identity as a subject alternative name (``--control-plane-identity``). Any other
holder of a certificate from the same CA (another agent, an operator) gets PERMISSION_DENIED.
Health and reflection stay open to every verified peer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from runtime.identity import peer_sans
from runtime.interceptors import guarded

log = logging.getLogger(__name__)

WORKER_PREFIX = "/h2k.v1.Worker/"


class ControlPlaneOnly(grpc.aio.ServerInterceptor):
    """Refuses Worker calls from peers without the control plane's SAN."""

    def __init__(self, control_plane_identity: str) -> None:
        self.identity = control_plane_identity

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(WORKER_PREFIX):
            return handler
        return guarded(method.removeprefix(WORKER_PREFIX), handler, self._require)

    @contextlib.asynccontextmanager
    async def _require(self, method: str, context: Any) -> AsyncIterator[None]:
        sans = peer_sans(context)
        if self.identity not in sans:
            shown = ", ".join(sans) or "none"
            log.warning(
                "worker call refused method=%s peer=%s sans=%s", method, context.peer(), shown
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Worker.{method} is only served to the control plane "
                f"(certificate SAN {self.identity!r}); the caller's SANs: {shown}",
            )
        yield
