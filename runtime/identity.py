"""Who is calling: the verified client certificate's names."""

from __future__ import annotations

from typing import Any

import grpc


def peer_sans(context: grpc.aio.ServicerContext[Any, Any]) -> list[str]:
    """Subject alternative names of the verified client certificate (empty without one)."""
    values = context.auth_context().get("x509_subject_alternative_name", [])
    return [v.decode(errors="replace") for v in values]


def peer_common_name(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The common name of the verified client certificate, if any."""
    values = list(context.auth_context().get("x509_common_name", []))
    return values[0].decode(errors="replace") if values else None
