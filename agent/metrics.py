"""What the agent tells Prometheus and the tracer about the jobs it runs.

The metric names are the ones the original hyper2kvm worker's dashboards use. Counters and
histograms change as jobs run (:class:`JobObserver`); capabilities and temporary space are
read at scrape time (:class:`NodeCollector`). Each job is one span, ``agent.execute``, under
the ``Worker/ExecuteJob`` call that started it, with a child span per phase.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.events import JobEvents
from agent.progress import ProgressReporter
from protocol.gen.h2k.v1 import agent_pb2
from protocol.spec import JobSpec
from runtime.tracing import tracer

log = logging.getLogger(__name__)
_TRACER = tracer(__name__)

# Seconds to hours: an inspect takes seconds, a large convert hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
# 1 MiB to 4 TiB, four times per step.
SIZE_BUCKETS = tuple(float(2**20 * 4**step) for step in range(12))

MIGRATIONS = Counter(
    "hyper2kvm_migration_total",
    "Jobs this agent finished, by operation and final status (completed, failed, cancelled).",
    ["operation", "status"],
)
MIGRATION_DURATION = Histogram(
    "hyper2kvm_migration_duration_seconds",
    "Wall-clock time of finished jobs on this agent, from start to terminal event.",
    ["operation"],
    buckets=DURATION_BUCKETS,
)
MIGRATION_FAILURES = Counter(
    "hyper2kvm_migration_failures_total",
    "Jobs that ended FAILED on this agent, by operation and error code.",
    ["operation", "error_type"],
)
INPUT_SIZE = Histogram(
    "hyper2kvm_vmdk_size_bytes",
    "Sizes of the input image files jobs read (bytes on disk).",
    buckets=SIZE_BUCKETS,
)
JOBS_ACTIVE = Gauge("hyper2kvm_worker_jobs_active", "Jobs running on this agent now.")
CONVERSION_BYTES = Counter(
    "hyper2kvm_conversion_bytes_total",
    "Bytes of virtual disk written by conversions (rate() gives the throughput).",
    ["operation"],
)


class JobObserver:
    """Metrics and spans of one job attempt; :meth:`end` exactly once when it is over."""

    def __init__(self, spec: JobSpec, node_name: str, attempt: int) -> None:
        self._operation = spec.operation.value
        self._started = time.monotonic()
        self._bytes_done = 0
        self._ended = False
        self._attributes: dict[str, str | int] = {
            "h2k.job_id": spec.job_id,
            "h2k.operation": self._operation,
            "h2k.agent": node_name,
            "h2k.attempt": attempt,
        }
        # Started in the caller's context: the ExecuteJob server span is the parent.
        self.span: Span = _TRACER.start_span("agent.execute", attributes=self._attributes)
        self._phase_span: Span | None = None
        JOBS_ACTIVE.inc()

    def activated(self) -> AbstractContextManager[Any]:
        """Make the job span current (spans and log lines inside belong to the job)."""
        return trace.use_span(self.span, end_on_exit=False)

    def observe_input(self, path: Path) -> None:
        """Record the input image's size on disk."""
        try:
            size = path.stat().st_size
        except OSError:
            return
        INPUT_SIZE.observe(size)
        self.span.set_attribute("h2k.input_bytes", size)

    def enter_phase(self, phase: str) -> None:
        """End the previous phase's span and start one for ``phase``."""
        if self._ended:
            return
        if self._phase_span is not None:
            self._phase_span.end()
        context = trace.set_span_in_context(self.span)
        self._phase_span = _TRACER.start_span(
            f"agent.{phase}", context=context, attributes={**self._attributes, "h2k.phase": phase}
        )

    def add_bytes(self, bytes_done: int) -> None:
        """Count the bytes converted since the last report (``bytes_done`` only grows)."""
        if bytes_done > self._bytes_done:
            CONVERSION_BYTES.labels(self._operation).inc(bytes_done - self._bytes_done)
            self._bytes_done = bytes_done

    def end(self, status: str, error_type: str | None = None) -> None:
        """Record the outcome ("completed", "failed", "cancelled") and end the spans."""
        if self._ended:
            return
        self._ended = True
        JOBS_ACTIVE.dec()
        MIGRATIONS.labels(self._operation, status).inc()
        MIGRATION_DURATION.labels(self._operation).observe(time.monotonic() - self._started)
        if status == "failed":
            MIGRATION_FAILURES.labels(self._operation, error_type or "UNKNOWN").inc()
            self.span.set_status(Status(StatusCode.ERROR, error_type or "failed"))
        self.span.set_attribute("h2k.status", status)
        self.span.set_attribute("h2k.bytes_done", self._bytes_done)
        if self._phase_span is not None:
            self._phase_span.end()
        self.span.end()


class ObservedProgress(ProgressReporter):
    """A :class:`ProgressReporter` that also feeds the job's phase spans and byte counter."""

    def __init__(self, events: JobEvents, observer: JobObserver) -> None:
        super().__init__(events)
        self._observer = observer

    def report(
        self,
        phase: str,
        percent: float,
        *,
        bytes_done: int = 0,
        bytes_total: int = 0,
        message: str = "",
        force: bool = False,
    ) -> bool:
        if phase != self.phase:
            self._observer.enter_phase(phase)
        self._observer.add_bytes(bytes_done)
        return super().report(
            phase,
            percent,
            bytes_done=bytes_done,
            bytes_total=bytes_total,
            message=message,
            force=force,
        )


def _label_name(probe: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", probe)
    return name if re.match(r"[a-zA-Z_]", name) else f"_{name}"


class NodeCollector(Collector):
    """Capabilities and temporary space of this node, read at each scrape."""

    def __init__(
        self,
        node_name: str,
        capabilities: Callable[[], agent_pb2.Capabilities],
        temp_dirs: list[tuple[str, Path]],
    ) -> None:
        self._node = node_name
        self._capabilities = capabilities
        self._temp_dirs = temp_dirs

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the capability labels are known only once detected

    def collect(self) -> Iterator[Metric]:
        yield self._capability_info()
        yield from self._temp_space()

    def _capability_info(self) -> Metric:
        probes = sorted(self._capabilities().probes, key=lambda p: p.name)
        labels = {_label_name(p.name): "true" if p.available else "false" for p in probes}
        labels.pop("worker_id", None)
        family = GaugeMetricFamily(
            "hyper2kvm_worker_capability_info",
            "The capabilities this agent detected (one label per capability); always 1.",
            labels=["worker_id", *labels],
        )
        family.add_metric([self._node, *labels.values()], 1)
        return family

    def _temp_space(self) -> Iterator[Metric]:
        free = GaugeMetricFamily(
            "hyper2kvm_temp_space_free_bytes",
            "Free bytes (for unprivileged writers) in the file systems holding temporary files.",
            labels=["purpose", "path"],
        )
        size = GaugeMetricFamily(
            "hyper2kvm_temp_space_size_bytes",
            "Size of the file systems holding temporary files.",
            labels=["purpose", "path"],
        )
        for purpose, path in self._temp_dirs:
            try:
                stat = os.statvfs(path)
            except OSError:
                continue  # not there (yet): no sample rather than a wrong one
            free.add_metric([purpose, str(path)], stat.f_bavail * stat.f_frsize)
            size.add_metric([purpose, str(path)], stat.f_blocks * stat.f_frsize)
        yield from (free, size)


def temp_dirs(state_dir: Path, allow_output: list[Path]) -> list[tuple[str, Path]]:
    """Where temporary files go: the state directory (scratch, journals) and each output
    directory (a conversion's temporary output sits next to its final name)."""
    return [("state", state_dir), *(("output", path) for path in allow_output)]


def register_node_collector(
    collector: NodeCollector, registry: CollectorRegistry = REGISTRY
) -> Callable[[], None]:
    """Expose the node gauges; returns the function that removes them again."""
    registry.register(collector)
    return lambda: registry.unregister(collector)
