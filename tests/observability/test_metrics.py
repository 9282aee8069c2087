"""Scrape /metrics of the real control plane and agent after real jobs and check the values."""

from __future__ import annotations

import contextlib
import json
import threading

from client import H2KClient
from devsupport.cluster import wait_for
from devsupport.images import build_image
from devsupport.specs import job_spec
from protocol.errors import NotFound
from tests.observability.conftest import Observed
from tests.support.scrape import Scrape, scrape

AGENT_METRICS = {
    "hyper2kvm_migration_total": "counter",
    "hyper2kvm_migration_duration_seconds": "histogram",
    "hyper2kvm_migration_failures_total": "counter",
    "hyper2kvm_vmdk_size_bytes": "histogram",
    "hyper2kvm_worker_capability_info": "gauge",
    "hyper2kvm_worker_jobs_active": "gauge",
    "hyper2kvm_conversion_bytes_total": "counter",
    "hyper2kvm_temp_space_free_bytes": "gauge",
    "hyper2kvm_temp_space_size_bytes": "gauge",
}
CONTROLPLANE_METRICS = {
    "hyper2kvm_jobs": "gauge",
    "hyper2kvm_queue_depth": "gauge",
    "hyper2kvm_queue_oldest_job_age_seconds": "gauge",
    "hyper2kvm_agents": "gauge",
    "hyper2kvm_job_submit_duration_seconds": "histogram",
    "hyper2kvm_job_scheduling_latency_seconds": "histogram",
    "hyper2kvm_jobs_submitted_total": "counter",
    "grpc_server_handled_total": "counter",
    "grpc_server_handling_seconds": "histogram",
    "hyper2kvm_job_watchers": "gauge",
}


def _family_name(metric: str, kind: str) -> str:
    # The parser names counter families without their _total suffix.
    return metric.removesuffix("_total") if kind == "counter" else metric


def _assert_conventions(result: Scrape, expected: dict[str, str]) -> None:
    for metric, kind in expected.items():
        family = result.families.get(_family_name(metric, kind))
        assert family is not None, f"{metric} is not exported"
        assert family.type == kind, f"{metric} is a {family.type}, not a {kind}"
    for family in result.families.values():
        assert family.documentation.strip(), f"{family.name} has no HELP text"
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram" and family.name.startswith("hyper2kvm_"):
            assert family.name.endswith(("_seconds", "_bytes")), f"{family.name}: unit?"


def _convert(observed: Observed, name: str, source_path: str, fmt: str) -> dict:
    cluster = observed.cluster
    outdir = cluster.output_dir / "metrics"
    outdir.mkdir(exist_ok=True)
    doc = job_spec(image=source_path, image_format=fmt, output=outdir, job_id=name)
    cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=180)
    return json.loads(cluster.h2kctl("get", name, "-o", "json", check=True).stdout)


def test_agent_and_control_plane_count_the_jobs_they_ran(observed: Observed) -> None:
    cluster = observed.cluster
    agent_before, cp_before = scrape(observed.agent_metrics), scrape(observed.cp_metrics)
    _assert_conventions(agent_before, AGENT_METRICS)
    _assert_conventions(cp_before, CONTROLPLANE_METRICS)

    images = cluster.input_dir / "metrics"
    first = build_image(images, "vmdk-monolithicSparse", stem="first")
    second = build_image(images, "vhdx", stem="second")
    assert _convert(observed, "metrics-ok-1", str(first.path), first.v1_format)["state"] == (
        "COMPLETED"
    )
    assert _convert(observed, "metrics-ok-2", str(second.path), second.v1_format)["state"] == (
        "COMPLETED"
    )
    # The same output again: refused with OUTPUT_EXISTS (not retried).
    failed = _convert(observed, "metrics-fail", str(first.path), first.v1_format)
    assert failed["state"] == "FAILED" and failed["result"]["error"]["code"] == "OUTPUT_EXISTS"
    with H2KClient(cluster.address) as client, contextlib.suppress(NotFound):
        client.get("no-such-job")

    agent, cp = scrape(observed.agent_metrics), scrape(observed.cp_metrics)

    def agent_delta(name: str, **labels: str) -> float:
        return agent.value(name, **labels) - agent_before.value(name, **labels)

    def cp_delta(name: str, **labels: str) -> float:
        return cp.value(name, **labels) - cp_before.value(name, **labels)

    ok = {"operation": "convert", "status": "completed"}
    assert agent_delta("hyper2kvm_migration_total", **ok) == 2
    assert agent_delta("hyper2kvm_migration_total", operation="convert", status="failed") == 1
    assert (
        agent_delta(
            "hyper2kvm_migration_failures_total", operation="convert", error_type="OUTPUT_EXISTS"
        )
        == 1
    )
    assert agent_delta("hyper2kvm_migration_duration_seconds_count", operation="convert") == 3
    assert agent_delta("hyper2kvm_migration_duration_seconds_sum", operation="convert") > 0
    assert agent_delta("hyper2kvm_vmdk_size_bytes_count") == 3
    input_bytes = first.path.stat().st_size * 2 + second.path.stat().st_size
    assert agent_delta("hyper2kvm_vmdk_size_bytes_sum") == input_bytes
    converted = agent_delta("hyper2kvm_conversion_bytes_total", operation="convert")
    assert converted == first.virtual_size + second.virtual_size
    assert agent.value("hyper2kvm_worker_jobs_active") == 0
    [info] = agent.samples("hyper2kvm_worker_capability_info")
    assert info.value == 1 and info.labels["worker_id"] == "node-1"
    assert info.labels["qemu_img"] == "true"
    for purpose, path in (("state", cluster.workdir / "node-1"), ("output", cluster.output_dir)):
        free = agent.value("hyper2kvm_temp_space_free_bytes", purpose=purpose, path=str(path))
        size = agent.value("hyper2kvm_temp_space_size_bytes", purpose=purpose, path=str(path))
        assert 0 < free <= size

    assert cp_delta("hyper2kvm_jobs", state="COMPLETED") == 2
    assert cp_delta("hyper2kvm_jobs", state="FAILED") == 1
    assert cp.value("hyper2kvm_queue_depth") == 0
    assert cp.value("hyper2kvm_agents", state="READY") == 1
    assert cp.value("hyper2kvm_agents", state="LOST") == 0
    assert cp_delta("hyper2kvm_jobs_submitted_total") == 3
    assert cp_delta("hyper2kvm_job_submit_duration_seconds_count") == 3
    assert cp_delta("hyper2kvm_job_scheduling_latency_seconds_count") == 3
    submit = {"grpc_service": "h2k.v1.JobService", "grpc_method": "SubmitJob"}
    assert cp_delta("grpc_server_handled_total", grpc_code="OK", **submit) == 3
    get = {"grpc_service": "h2k.v1.JobService", "grpc_method": "GetJob"}
    assert cp_delta("grpc_server_handled_total", grpc_code="NOT_FOUND", **get) == 1
    assert cp_delta("grpc_server_handling_seconds_count", **submit) == 3
    assert cp.value("grpc_server_handled_total", grpc_method="Heartbeat", grpc_code="OK") > 0


def test_queue_and_watcher_gauges_follow_a_stuck_job(observed: Observed) -> None:
    cluster = observed.cluster
    doc = job_spec(
        image=cluster.input_dir / "never.vmdk",
        output=cluster.output_dir,
        job_id="metrics-stuck",
        # No test machine has a petabyte of memory: the job stays queued.
        capability_requirements={"min_memory_gb": 1_000_000},
    )
    cluster.h2kctl("submit", str(cluster.write_job(doc)), check=True)
    wait_for(
        lambda: scrape(observed.cp_metrics).value("hyper2kvm_queue_oldest_job_age_seconds") > 1,
        what="the stuck job ageing in the queue",
    )
    assert scrape(observed.cp_metrics).value("hyper2kvm_queue_depth") == 1

    ended = threading.Event()

    def watch() -> None:
        with H2KClient(cluster.address) as client:
            for _event in client.watch("metrics-stuck"):
                pass
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_for(
        lambda: scrape(observed.cp_metrics).value("hyper2kvm_job_watchers") == 1,
        what="one watcher",
    )
    cluster.h2kctl("cancel", "metrics-stuck", check=True)
    watcher.join(30)
    assert ended.is_set()
    after = scrape(observed.cp_metrics)
    assert after.value("hyper2kvm_job_watchers") == 0
    assert after.value("hyper2kvm_queue_depth") == 0
    assert after.value("hyper2kvm_queue_oldest_job_age_seconds") == 0
