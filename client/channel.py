"""Opening the gRPC channel to the control plane."""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger(__name__)

# grpc's own reconnect backoff starts at 1 s and grows to 120 s; a watch that resumes after a
# control-plane restart should find the server again within seconds, not minutes.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def open_channel(
    server: str,
    *,
    insecure: bool,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.Channel:
    """Open a channel to ``server`` ("host:port").

    Args:
        server: the control plane address.
        insecure: plaintext gRPC was asked for explicitly.
        credentials: TLS (or mTLS) credentials; when given they are always used.

    Returns:
        A channel; closing it is the caller's job.

    Raises:
        ValueError: neither credentials nor ``insecure``.
    """
    if credentials is not None:
        return grpc.secure_channel(server, credentials, options=CHANNEL_OPTIONS)
    if not insecure:
        # Never fall back to plaintext silently: the caller asked for TLS but gave nothing.
        raise ValueError(
            f"no TLS credentials for {server}: give credentials (see runtime.tls."
            "client_credentials) or insecure=True for plaintext"
        )
    return grpc.insecure_channel(server, options=CHANNEL_OPTIONS)
