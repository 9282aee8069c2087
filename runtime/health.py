"""HTTP metrics and the probe-only health port every server can open."""

from __future__ import annotations

import logging
from typing import Any

import grpc

log = logging.getLogger(__name__)


class MetricsServer:
    """Prometheus ``/metrics`` over HTTP on its own thread (``--metrics-listen HOST:PORT``)."""

    def __init__(self, listen: str) -> None:
        host, port = split_host_port(listen)
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, host)
        self.port = int(self._server.server_port)
        log.info("metrics serving listen=%s port=%d path=/metrics", listen, self.port)

    def stop(self) -> None:
        """Stop answering scrapes and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def split_host_port(listen: str) -> tuple[str, int]:
    """``"0.0.0.0:9100"`` -> ("0.0.0.0", 9100); "[::]:9100" works too.

    Raises:
        ValueError: not HOST:PORT with a port from 0 to 65535.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


async def start_health_server(listen: str, servicer: Any) -> grpc.aio.Server:
    """Serve only ``grpc.health.v1`` (the given servicer), in plaintext, on ``listen``.

    Kubernetes' gRPC probes cannot speak TLS; this port lets them check a server whose own
    port requires mutual TLS. It reveals nothing but SERVING or NOT_SERVING.

    Raises:
        SystemExit: the address cannot be bound.
    """
    from grpc_health.v1 import health_pb2_grpc

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise SystemExit(f"cannot listen on {listen} (--health-listen): {exc}") from exc
    await server.start()
    log.info("health serving listen=%s", listen)
    return server
