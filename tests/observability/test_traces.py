"""One trace per job, from h2kctl through the control plane to the agent, in a real receiver."""

from __future__ import annotations

import json

from devsupport.cluster import wait_for
from devsupport.images import build_image
from devsupport.specs import job_spec
from tests.observability.conftest import Observed
from tests.observability.otlp import OtlpReceiver, ReceivedSpan

SERVER, CLIENT = 2, 3  # OTLP SpanKind values

# (service, span name, kind or None) -> the (service, name) of its parent; None: the root.
EXPECTED_PARENTS: dict[tuple[str, str], tuple[str, str] | None] = {
    ("h2kctl", "h2kctl submit"): None,
    ("h2kctl", "/h2k.v1.JobService/SubmitJob"): ("h2kctl", "h2kctl submit"),
    ("h2k-controlplane", "/h2k.v1.JobService/SubmitJob"): (
        "h2kctl",
        "/h2k.v1.JobService/SubmitJob",
    ),
    ("h2k-controlplane", "controlplane.submit"): (
        "h2k-controlplane",
        "/h2k.v1.JobService/SubmitJob",
    ),
    ("h2k-controlplane", "controlplane.schedule"): ("h2k-controlplane", "controlplane.submit"),
    ("h2k-controlplane", "controlplane.dispatch"): ("h2k-controlplane", "controlplane.schedule"),
    ("h2k-controlplane", "/h2k.v1.Worker/ExecuteJob"): (
        "h2k-controlplane",
        "controlplane.dispatch",
    ),
    ("h2k-agent", "/h2k.v1.Worker/ExecuteJob"): ("h2k-controlplane", "/h2k.v1.Worker/ExecuteJob"),
    ("h2k-agent", "agent.execute"): ("h2k-agent", "/h2k.v1.Worker/ExecuteJob"),
    ("h2k-agent", "agent.inspect"): ("h2k-agent", "agent.execute"),
    ("h2k-agent", "agent.convert"): ("h2k-agent", "agent.execute"),
    ("h2k-agent", "agent.finalize"): ("h2k-agent", "agent.execute"),
    ("h2k-agent", "qemu-img convert"): ("h2k-agent", "agent.execute"),
}


def _wait_for_trace(receiver: OtlpReceiver, trace_id: str) -> list[ReceivedSpan]:
    """The trace's spans once every expected one arrived (batches flush every 100 ms)."""

    def complete() -> list[ReceivedSpan] | None:
        spans = receiver.trace(trace_id)
        return spans if set(EXPECTED_PARENTS) <= {(s.service, s.name) for s in spans} else None

    try:
        return wait_for(complete, timeout=30, what="every span of the job's trace")
    except TimeoutError:
        present = {(s.service, s.name) for s in receiver.trace(trace_id)}
        raise AssertionError(
            f"missing spans {set(EXPECTED_PARENTS) - present}; present {present}"
        ) from None


def test_one_trace_spans_h2kctl_control_plane_and_agent(observed: Observed) -> None:
    cluster, receiver = observed.cluster, observed.receiver
    source = build_image(cluster.input_dir / "traces", "vmdk-monolithicSparse")
    outdir = cluster.output_dir / "traces"
    outdir.mkdir(parents=True, exist_ok=True)
    doc = job_spec(image=source.path, image_format=source.v1_format, output=outdir)
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr

    job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
    trace_id = job["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16) != 0
    table = cluster.h2kctl("get", doc["job_id"], check=True).stdout
    assert "Trace" in table and trace_id in table

    spans = _wait_for_trace(receiver, trace_id)
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        key = (span.service, span.name)
        if key not in EXPECTED_PARENTS:
            continue
        parent = by_id.get(span.parent_span_id)
        expected = EXPECTED_PARENTS[key]
        if expected is None:
            assert span.parent_span_id == "", f"{key} should be the root"
        else:
            assert parent is not None, f"{key}: parent {span.parent_span_id} not in the trace"
            assert (parent.service, parent.name) == expected, key
    kinds = {(s.service, s.name): s.kind for s in spans}
    assert kinds[("h2k-agent", "/h2k.v1.Worker/ExecuteJob")] == SERVER
    assert kinds[("h2k-controlplane", "/h2k.v1.Worker/ExecuteJob")] == CLIENT

    execute = next(s for s in spans if s.name == "agent.execute")
    assert execute.attributes["h2k.job_id"] == doc["job_id"]
    assert execute.attributes["h2k.operation"] == "convert"
    assert execute.attributes["h2k.agent"] == "node-1"
    assert execute.attributes["h2k.status"] == "completed"
    assert execute.attributes["h2k.bytes_done"] == source.virtual_size
    dispatch = next(s for s in spans if s.name == "controlplane.dispatch")
    assert dispatch.attributes["h2k.agent"] == "node-1"
    # Heartbeats and health checks are not traced.
    assert not [s for s in receiver.spans() if "Heartbeat" in s.name or "Health" in s.name]


def test_json_logs_carry_job_id_and_trace_id(observed: Observed) -> None:
    cluster = observed.cluster
    source = build_image(cluster.input_dir / "logs", "qcow2")
    doc = job_spec(
        operation="inspect", image=source.path, image_format="qcow2", output=cluster.output_dir
    )
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    trace_id = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json").stdout)["trace_id"]

    for process in (cluster.controlplane, cluster.agents["node-1"]):
        assert process is not None
        lines = [json.loads(line) for line in process.log().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("job_id") == doc["job_id"]]
        assert mine, f"{process.name} logged nothing with job_id={doc['job_id']}"
        assert all(line["trace_id"] == trace_id for line in mine), mine
        assert {"time", "level", "logger", "message"} <= set(mine[0])
