"""One real control plane and agent with metrics, JSON logs and tracing to a test receiver."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devsupport.cluster import Cluster, free_port
from tests.observability.otlp import OtlpReceiver


@dataclass
class Observed:
    cluster: Cluster
    receiver: OtlpReceiver
    cp_metrics: int
    agent_metrics: int


@pytest.fixture(scope="session")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """Every process (h2kctl too) exports spans to the receiver; both servers serve /metrics."""
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is not installed: run `make setup`")
    workdir: Path = tmp_path_factory.mktemp("observed")
    cp_metrics, agent_metrics = free_port(), free_port()
    with OtlpReceiver() as receiver, pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        env.delenv("OTEL_SERVICE_NAME", raising=False)
        env.delenv("OTEL_SDK_DISABLED", raising=False)
        cluster = Cluster(workdir)
        try:
            cluster.start_controlplane(
                "--metrics-listen", f"127.0.0.1:{cp_metrics}", "--log-format", "json"
            )
            cluster.start_agent(
                "node-1", "--metrics-listen", f"127.0.0.1:{agent_metrics}", "--log-format", "json"
            )
            yield Observed(cluster, receiver, cp_metrics, agent_metrics)
        finally:
            cluster.stop()


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "observed" in request.fixturenames:
        print(request.getfixturevalue("observed").cluster.logs())
