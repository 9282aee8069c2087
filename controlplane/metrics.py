"""The control plane's Prometheus metrics.

Counters and histograms are updated where things happen (submit, assignment, every RPC); the
gauges of stored state (jobs by state, the queue, agents by state) are read from the store at
scrape time, so they are right after a restart and never drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.leases import AgentLiveness, agent_liveness
from controlplane.store import JobStore
from protocol.conversion import utcnow
from protocol.states import JobState
from runtime.interceptors import guarded

log = logging.getLogger(__name__)

# A scrape waits at most this long for the store.
SCRAPE_TIMEOUT_SECONDS = 5.0

SUBMIT_DURATION = Histogram(
    "hyper2kvm_job_submit_duration_seconds",
    "Time SubmitJob took to validate and durably store a job.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
SCHEDULING_LATENCY = Histogram(
    "hyper2kvm_job_scheduling_latency_seconds",
    "Time a job waited in the queue before it was assigned to an agent.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400),
)
JOBS_SUBMITTED = Counter(
    "hyper2kvm_jobs_submitted_total", "Jobs accepted by SubmitJob (new ones, not repeats)."
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the control plane, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_DURATION = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end (streams: their whole life).",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, 3600),
)
WATCHERS = Gauge(
    "hyper2kvm_job_watchers",
    "Open WatchJob and WatchJobBatches streams (clients following a job).",
)

_WATCH_METHODS = frozenset({"/h2k.v1.JobService/WatchJob", "/h2k.v1.JobService/WatchJobBatches"})


def observe_submit(started: float) -> None:
    """Record one SubmitJob that began at ``time.monotonic()`` value ``started``."""
    SUBMIT_DURATION.observe(time.monotonic() - started)


def observe_scheduling(queued_seconds: float) -> None:
    """Record how long an assigned job waited in the queue."""
    SCHEDULING_LATENCY.observe(max(0.0, queued_seconds))


def _split_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


def _status_of(context: Any, error: BaseException | None) -> grpc.StatusCode:
    """The status an RPC ended with, from what its servicer set or raised."""
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC by method and status code and times it; tracks open watchers."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return guarded(handler_call_details.method, handler, self._around)

    @contextlib.asynccontextmanager
    async def _around(self, method: str, context: Any) -> AsyncIterator[None]:
        service, name = _split_method(method)
        started = time.monotonic()
        error: BaseException | None = None
        watching = method in _WATCH_METHODS
        if watching:
            WATCHERS.inc()
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            if watching:
                WATCHERS.dec()
            code = _status_of(context, error).name
            RPC_HANDLED.labels(service, name, code).inc()
            RPC_DURATION.labels(service, name).observe(time.monotonic() - started)


@dataclass(frozen=True)
class StoreSnapshot:
    """What the state gauges show, read in one go from the store."""

    jobs_by_state: dict[JobState, int]
    oldest_queued_seconds: float
    agents_by_state: dict[str, int]


async def take_snapshot(store: JobStore, lease: timedelta) -> StoreSnapshot:
    """Count jobs by state, age the queue and classify agents as the registry would."""
    now = utcnow()
    counts = await store.count_jobs_by_state()
    kinds = await store.queue_summary()
    oldest = min((kind.oldest_submitted_at for kind in kinds), default=None)
    agents = dict.fromkeys((state.value for state in AgentLiveness), 0)
    for agent in await store.list_agents():
        name = agent_liveness(agent, now, lease).value
        agents[name] = agents.get(name, 0) + 1
    age = 0.0 if oldest is None else (now - oldest).total_seconds()
    return StoreSnapshot(counts, max(0.0, age), agents)


def _families(snapshot: StoreSnapshot | None) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("hyper2kvm_jobs", "Jobs in the store by state.", labels=["state"])
    depth = GaugeMetricFamily("hyper2kvm_queue_depth", "Jobs waiting in the queue (QUEUED).")
    oldest = GaugeMetricFamily(
        "hyper2kvm_queue_oldest_job_age_seconds",
        "How long the oldest queued job has been waiting since it was submitted (0: empty).",
    )
    agents = GaugeMetricFamily(
        "hyper2kvm_agents", "Registered agents by state (LOST: lease ran out).", labels=["state"]
    )
    if snapshot is not None:
        for state, count in snapshot.jobs_by_state.items():
            jobs.add_metric([state.value], count)
        depth.add_metric([], snapshot.jobs_by_state.get(JobState.QUEUED, 0))
        oldest.add_metric([], snapshot.oldest_queued_seconds)
        for name, count in snapshot.agents_by_state.items():
            agents.add_metric([name], count)
    yield from (jobs, depth, oldest, agents)


class StoreStateCollector(Collector):
    """Reads the store on the control plane's event loop at each scrape."""

    def __init__(self, store: JobStore, loop: asyncio.AbstractEventLoop, lease: timedelta) -> None:
        self._store = store
        self._loop = loop
        self._lease = lease

    def describe(self) -> Iterator[Metric]:
        # Without describe() the registry would collect on registration, from the loop's own
        # thread, and wait for that loop forever.
        return _families(None)

    def collect(self) -> Iterator[Metric]:
        future = asyncio.run_coroutine_threadsafe(
            take_snapshot(self._store, self._lease), self._loop
        )
        try:
            snapshot = future.result(SCRAPE_TIMEOUT_SECONDS)
        except Exception as exc:
            future.cancel()
            log.warning("metrics scrape could not read the store error=%r", exc)
            return
        yield from _families(snapshot)


def register_store_collector(
    store: JobStore,
    loop: asyncio.AbstractEventLoop,
    lease: timedelta,
    registry: CollectorRegistry = REGISTRY,
) -> Callable[[], None]:
    """Expose the state gauges; returns the function that removes them again."""
    collector = StoreStateCollector(store, loop, lease)
    registry.register(collector)
    return lambda: registry.unregister(collector)
