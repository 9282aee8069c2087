"""OpenTelemetry tracing shared by h2k-controlplane, h2k-agent and h2kctl.

Configured only by the standard ``OTEL_*`` environment variables: tracing is on when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and off
otherwise (``OTEL_SDK_DISABLED=true`` turns it off too). Spans go to an OTLP/gRPC collector
(Jaeger takes OTLP directly); ``OTEL_SERVICE_NAME`` overrides each program's default name,
``OTEL_TRACES_SAMPLER`` picks the sampler and ``OTEL_BSP_*`` tune the batching.

Context crosses every gRPC hop through the OpenTelemetry gRPC instrumentation (W3C
``traceparent`` in the call metadata). The one hop that is not a call in flight, a job waiting
in the queue until the dispatcher picks it up, keeps its submit's context as a ``traceparent``
string stored with the job (:func:`current_traceparent`, :func:`context_from_traceparent`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
# Probes and liveness traffic would drown the job traces.
_UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
_UNTRACED_METHODS = ("Heartbeat",)

_enabled = False


def tracing_endpoint() -> str | None:
    """The OTLP endpoint tracing exports to, or None when tracing is off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def tracing_enabled() -> bool:
    """Whether :func:`setup_tracing` turned tracing on in this process."""
    return _enabled


def setup_tracing(default_service: str, *, asyncio_client: bool) -> bool:
    """Install the tracer provider and the gRPC client instrumentation, when configured.

    Args:
        default_service: ``service.name`` unless ``OTEL_SERVICE_NAME`` says otherwise.
        asyncio_client: instrument ``grpc.aio`` channels (the servers) rather than the
            synchronous ones (h2kctl).

    Returns:
        True when tracing is on.
    """
    global _enabled
    endpoint = tracing_endpoint()
    if endpoint is None or _enabled:
        return _enabled
    # Imported here: a process without tracing never loads the SDK and the exporter.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or default_service
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    # The exporter opens its channel before the instrumentation patches channel creation,
    # so exporting spans never makes spans of its own.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _instrument_clients(asyncio_client)
    _enabled = True
    log.info("tracing on service=%s endpoint=%s", service, endpoint)
    return True


def _traced_call_filter() -> Callable[[Any], bool]:
    from opentelemetry.instrumentation.grpc import filters

    untraced = [filters.service_name(name) for name in _UNTRACED_SERVICES]
    untraced += [filters.method_name(name) for name in _UNTRACED_METHODS]
    return filters.negate(filters.any_of(*untraced))


def _instrument_clients(asyncio_client: bool) -> None:
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcInstrumentorClient,
    )

    if asyncio_client:
        GrpcAioInstrumentorClient(filter_=_traced_call_filter()).instrument()
    else:
        GrpcInstrumentorClient(filter_=_traced_call_filter()).instrument()


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The OpenTelemetry server interceptor when tracing is on (put it first), else none."""
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(filter_=_traced_call_filter())
    return [interceptor]


def flush_traces(timeout_seconds: float = 5.0) -> None:
    """Export the spans still buffered (before a short-lived program exits)."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if _enabled and force_flush is not None:
        force_flush(int(timeout_seconds * 1000))


def tracer(name: str) -> trace.Tracer:
    """A tracer; spans are no-ops while tracing is off."""
    return trace.get_tracer(name)


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits, or "" outside a sampled span."""
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else ""


def current_traceparent() -> str:
    """The current span context as a W3C ``traceparent`` value ("" when there is none)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str) -> otel_context.Context | None:
    """The context a stored ``traceparent`` names, to start child spans in; None if none."""
    if not traceparent:
        return None
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def trace_id_of(traceparent: str) -> str:
    """The trace id part of a ``traceparent`` value ("" when malformed or empty)."""
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32:
        return ""
    return parts[1]
