"""client.views: friendly dicts from hand-built protobuf messages."""

from __future__ import annotations

import json

from client.views import agent_to_dict, event_to_dict, job_to_dict
from protocol.conversion import dict_to_struct, spec_to_proto
from protocol.gen.h2k.v1 import agent_pb2, job_pb2
from protocol.spec import parse_spec
from tests.support.job_service_double import make_event, timestamp

SPEC = {
    "job_id": "convert-001",
    "operation": "convert",
    "image": {"path": "/data/in/vm.vmdk", "format": "vmdk", "size_bytes": 10737418240},
    "artifacts": {"output_path": "/data/out"},
    "audit": {"requested_by": "ops", "tags": {"env": "staging"}},
    "parameters": {"output_format": "qcow2"},
}


def completed_job() -> job_pb2.Job:
    job = job_pb2.Job(
        spec=spec_to_proto(parse_spec(SPEC)),
        state=job_pb2.JOB_STATE_COMPLETED,
        assigned_agent="node-a",
        attempt=2,
        last_seq=9876543210,
        phase="done",
        progress_percent=100.0,
    )
    job.submitted_at.CopyFrom(timestamp(1_700_000_000))
    job.started_at.CopyFrom(timestamp(1_700_000_060))
    job.finished_at.CopyFrom(timestamp(1_700_000_120))
    step = job.history.add(
        from_state=job_pb2.JOB_STATE_QUEUED,
        to_state=job_pb2.JOB_STATE_ASSIGNED,
        reason="scheduled on node-a",
        attempt=1,
    )
    step.time.CopyFrom(timestamp(1_700_000_030))
    job.result.outputs.add(
        kind="image",
        path="/data/out/vm.qcow2",
        size_bytes=5368709120,
        format="qcow2",
        sha256="ab" * 32,
    )
    job.result.metrics.CopyFrom(dict_to_struct({"duration_seconds": 60, "throughput": 1.5}))
    return job


def test_job_dict_uses_short_names_iso_times_and_int64_ints():
    view = job_to_dict(completed_job())

    assert view["job_id"] == "convert-001"
    assert view["state"] == "COMPLETED"
    assert view["operation"] == "convert"
    assert view["image"] == "/data/in/vm.vmdk"
    assert view["attempt"] == 2
    assert view["last_seq"] == 9876543210
    assert view["submitted_at"] == "2023-11-14T22:13:20.000Z"
    assert view["updated_at"] is None
    assert view["history"] == [
        {
            "from": "QUEUED",
            "to": "ASSIGNED",
            "time": "2023-11-14T22:13:50.000Z",
            "reason": "scheduled on node-a",
            "attempt": 1,
        }
    ]
    result = view["result"]
    assert result["outputs"] == [
        {
            "kind": "image",
            "path": "/data/out/vm.qcow2",
            "size_bytes": 5368709120,
            "format": "qcow2",
            "sha256": "ab" * 32,
        }
    ]
    assert result["metrics"] == {"duration_seconds": 60, "throughput": 1.5}
    assert result["error"] is None
    json.dumps(view)  # JSON-able as it is


def test_job_dict_spec_is_the_v1_document():
    spec = job_to_dict(completed_job())["spec"]

    assert spec["operation"] == "convert"
    assert spec["image"] == {
        "path": "/data/in/vm.vmdk",
        "format": "vmdk",
        "size_bytes": 10737418240,
    }
    assert spec["artifacts"]["output_path"] == "/data/out"
    assert spec["audit"]["tags"] == {"env": "staging"}
    assert parse_spec(spec).job_id == "convert-001"  # the document validates again


def test_failed_job_dict_has_the_error_and_queued_job_its_reason():
    failed = job_pb2.Job(state=job_pb2.JOB_STATE_FAILED)
    failed.result.error.CopyFrom(
        job_pb2.JobError(phase="convert", code="TOOL_FAILED", message="qemu-img exited 1")
    )
    queued = job_pb2.Job(state=job_pb2.JOB_STATE_QUEUED, queue_reason="no agent has nbd")

    assert job_to_dict(failed)["result"]["error"] == {
        "phase": "convert",
        "code": "TOOL_FAILED",
        "message": "qemu-img exited 1",
    }
    queued_view = job_to_dict(queued)
    assert queued_view["state"] == "QUEUED"
    assert queued_view["queue_reason"] == "no agent has nbd"
    assert queued_view["operation"] is None


def test_event_dict():
    event = make_event(
        "convert-001",
        12,
        job_pb2.JOB_STATE_PROGRESSING,
        42.0,
        phase="convert",
        bytes_done=440401920,
        bytes_total=1073741824,
        message="converting",
        details={"rate": "100MiB/s"},
    )

    view = event_to_dict(event)

    assert view == {
        "job_id": "convert-001",
        "seq": 12,
        "time": "2023-11-14T22:13:32.000Z",
        "state": "PROGRESSING",
        "phase": "convert",
        "progress_percent": 42.0,
        "bytes_done": 440401920,
        "bytes_total": 1073741824,
        "message": "converting",
        "details": {"rate": "100MiB/s"},
        "attempt": 1,
        "agent": "node-a",
        "result": None,
    }


def test_terminal_event_dict_carries_the_result():
    result = job_pb2.JobResult()
    result.outputs.add(kind="inspection", path="/out/j_inspection.json", size_bytes=2048)
    event = make_event("j", 3, job_pb2.JOB_STATE_COMPLETED, 100.0, result=result)

    view = event_to_dict(event)

    assert view["state"] == "COMPLETED"
    assert view["result"]["outputs"][0]["path"] == "/out/j_inspection.json"


def test_agent_dict_keys_capabilities_by_probe_name():
    agent = agent_pb2.AgentInfo(
        name="node-a",
        address="10.0.0.5:50052",
        max_concurrent_jobs=4,
        state=agent_pb2.AGENT_STATE_CORDONED,
        running_job_ids=["j1"],
        version="0.1.0",
        capabilities=agent_pb2.Capabilities(
            level=agent_pb2.CAPABILITY_LEVEL_USERSPACE,
            execution_mode=agent_pb2.EXECUTION_MODE_HOST,
            memory_total_bytes=17179869184,
            disk_free_bytes=107374182400,
            probes=[
                agent_pb2.CapabilityProbe(name="qemu_img", available=True, version="8.2.2"),
                agent_pb2.CapabilityProbe(name="nbd", available=False, detail="module missing"),
            ],
        ),
    )
    agent.last_heartbeat.CopyFrom(timestamp(1_700_000_000))

    view = agent_to_dict(agent)

    assert view["state"] == "CORDONED"
    assert view["capability_level"] == "USERSPACE"
    assert view["execution_mode"] == "HOST"
    assert view["memory_total_bytes"] == 17179869184
    assert view["running_job_ids"] == ["j1"]
    assert view["last_heartbeat"] == "2023-11-14T22:13:20.000Z"
    assert view["drain_deadline"] is None
    assert view["capabilities"] == {
        "qemu_img": {"available": True, "version": "8.2.2", "detail": ""},
        "nbd": {"available": False, "version": "", "detail": "module missing"},
    }
    json.dumps(view)
