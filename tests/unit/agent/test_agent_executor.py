"""The executor running real jobs with real qemu-img: events, outputs, failures, cancel."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from agent.events import EventLog
from protocol.conversion import struct_to_dict
from protocol.errors import AlreadyExists, InvalidArgument, ResourceExhausted
from protocol.gen.h2k.v1 import job_pb2, services_pb2
from tests.unit.agent.builders import (
    AgentDirs,
    MiB,
    images_identical,
    job_spec,
    make_disk,
    make_gpt_disk,
    new_executor,
    run_job,
)

S = job_pb2


def _error(event: job_pb2.ProgressEvent) -> tuple[str, str]:
    return event.result.error.code, event.result.error.message


def _assert_well_formed(events: list[job_pb2.ProgressEvent], start_seq: int = 1) -> None:
    assert events[0].state == S.JOB_STATE_RUNNING and events[0].phase == "start"
    assert all(e.state == S.JOB_STATE_PROGRESSING for e in events[1:-1])
    assert [e.seq for e in events] == list(range(start_seq, start_seq + len(events)))
    percents = [e.progress_percent for e in events[:-1]]
    assert percents == sorted(percents), "progress must never go down"
    assert all(e.agent == "node-test" and e.attempt == 1 for e in events)


def test_convert_vmdk_to_qcow2_matches_source(dirs: AgentDirs) -> None:
    source = make_disk(dirs.input / "vm.vmdk", writes=("0xab 0 4M", "0xcd 40M 1M"))
    executor = new_executor(dirs)
    events = asyncio.run(run_job(executor, job_spec(dirs, source), start_seq=5))

    _assert_well_formed(events, start_seq=5)
    final = events[-1]
    assert final.state == S.JOB_STATE_COMPLETED, final.result.error.message
    target = dirs.output / "vm.qcow2"
    assert images_identical(source, "vmdk", target, "qcow2")
    [output] = final.result.outputs
    assert (output.kind, output.path, output.format) == ("image", str(target), "qcow2")
    assert output.size_bytes == target.stat().st_size
    metrics = struct_to_dict(final.result.metrics)
    assert metrics["virtual_size_bytes"] == 64 * MiB
    assert metrics["duration_seconds"] > 0 and metrics["output_bytes"] > 0
    assert {"inspect", "convert", "finalize"} <= {e.phase for e in events}
    assert not list(dirs.output.glob(".*h2k-tmp*")), "no temporary file left"
    # The event log holds exactly what was streamed.
    assert EventLog(dirs.state).read_after("job-1", 0) == events
    assert executor.running_job_ids() == []


def test_convert_to_raw_and_probed_format(dirs: AgentDirs) -> None:
    source = make_disk(dirs.input / "vm.vdi", fmt="vdi", size="8M", writes=("0x11 1M 1M",))
    spec = job_spec(dirs, source, fmt=None, parameters={"output_format": "raw"})
    events = asyncio.run(run_job(new_executor(dirs), spec))
    assert events[-1].state == S.JOB_STATE_COMPLETED, events[-1].result.error.message
    assert images_identical(source, "vdi", dirs.output / "vm.raw", "raw")


def test_existing_output_is_refused_unless_overwrite(dirs: AgentDirs) -> None:
    source = make_disk(dirs.input / "vm.vmdk", size="8M", writes=())
    (dirs.output / "vm.qcow2").write_bytes(b"precious")
    executor = new_executor(dirs)
    events = asyncio.run(run_job(executor, job_spec(dirs, source)))
    assert events[-1].state == S.JOB_STATE_FAILED
    code, message = _error(events[-1])
    assert code == "OUTPUT_EXISTS" and str(dirs.output / "vm.qcow2") in message
    assert (dirs.output / "vm.qcow2").read_bytes() == b"precious"

    spec = job_spec(dirs, source, job_id="job-2", parameters={"overwrite": True})
    events = asyncio.run(run_job(executor, spec))
    assert events[-1].state == S.JOB_STATE_COMPLETED
    assert images_identical(source, "vmdk", dirs.output / "vm.qcow2", "qcow2")


def test_path_outside_allow_list_fails_the_job(dirs: AgentDirs) -> None:
    events = asyncio.run(run_job(new_executor(dirs), job_spec(dirs, "/etc/passwd")))
    assert [e.state for e in events] == [S.JOB_STATE_RUNNING, S.JOB_STATE_FAILED]
    code, message = _error(events[-1])
    assert code == "PATH_NOT_ALLOWED"
    assert message.startswith("image.path: /etc/passwd is outside the allowed input directories")


def test_missing_input_fails_with_input_not_found(dirs: AgentDirs) -> None:
    spec = job_spec(dirs, dirs.input / "missing.vmdk")
    events = asyncio.run(run_job(new_executor(dirs), spec))
    assert _error(events[-1]) == (
        "INPUT_NOT_FOUND",
        f"image.path: {dirs.input / 'missing.vmdk'} does not exist",
    )


def test_probed_raw_and_backing_files_are_unsafe(dirs: AgentDirs) -> None:
    raw = dirs.input / "mystery.img"
    raw.write_bytes(b"\0" * MiB)
    events = asyncio.run(run_job(new_executor(dirs), job_spec(dirs, raw, fmt=None)))
    assert _error(events[-1])[0] == "UNSAFE_IMAGE"
    assert "probed as raw" in _error(events[-1])[1]

    base = make_disk(dirs.input / "base.qcow2", fmt="qcow2", size="8M", writes=())
    child = dirs.input / "child.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(child)],
        check=True,
    )
    spec = job_spec(dirs, child, fmt="qcow2", job_id="job-2", parameters={"output_format": "raw"})
    events = asyncio.run(run_job(new_executor(dirs), spec))
    code, message = _error(events[-1])
    assert code == "UNSAFE_IMAGE" and "backing file" in message


def test_inspect_writes_the_report_with_partitions(dirs: AgentDirs) -> None:
    source = make_gpt_disk(dirs.input / "gpt.vmdk")
    spec = job_spec(dirs, source, operation="inspect", job_id="insp-1")
    events = asyncio.run(run_job(new_executor(dirs), spec))
    final = events[-1]
    assert final.state == S.JOB_STATE_COMPLETED, final.result.error.message
    _assert_well_formed(events)
    report_path = dirs.output / "insp-1_inspection.json"
    report = json.loads(report_path.read_text())
    assert report["format"] == "vmdk" and report["virtual_size"] == 64 * MiB
    table = report["partition_table"]
    assert table["label"] == "gpt" and table["device"] == str(source)
    assert [(p["number"], p["start"], p["size"]) for p in table["partitions"]] == [
        (1, 2048, 40960),
        (2, 43008, 86016),
    ]
    assert struct_to_dict(final.result.details)["partition_table"]["label"] == "gpt"
    assert [o.kind for o in final.result.outputs] == ["inspection"]
    assert not list((dirs.state / "tmp").iterdir()), "scratch copy removed"


def test_offline_fix_checks_its_parameters_before_touching_the_disk(dirs: AgentDirs) -> None:
    # The repair itself needs root, loop and FUSE: tests/privileged runs it for real.
    source = make_disk(dirs.input / "vm.vmdk", size="8M", writes=())
    spec = job_spec(dirs, source, operation="offline_fix", parameters={"dry_run": "yes"})
    events = asyncio.run(run_job(new_executor(dirs), spec))
    assert _error(events[-1]) == ("INVALID_SPEC", "parameters.dry_run: must be true or false")
    assert list(dirs.output.iterdir()) == []


def test_cancel_of_running_convert_leaves_no_temporary_file(dirs: AgentDirs) -> None:
    # 256 MiB of pattern data compressed to qcow2 takes seconds: long enough to cancel.
    source = dirs.input / "big.img"
    with source.open("wb") as handle:
        for _ in range(256):
            handle.write(b"\xab" * MiB)
    spec = job_spec(dirs, source, fmt="raw", job_id="slow-1")
    executor = new_executor(dirs)

    async def scenario() -> tuple[list[job_pb2.ProgressEvent], list[Path]]:
        events: list[job_pb2.ProgressEvent] = []
        temps: list[Path] = []
        request = services_pb2.ExecuteJobRequest(spec=spec, attempt=1, start_seq=1)
        async with asyncio.timeout(60):
            async for event in executor.start(request):
                events.append(event)
                if event.phase == "convert" and event.progress_percent > 2 and not temps:
                    temps.extend(dirs.output.glob(".big.qcow2.h2k-tmp-*"))
                    assert await executor.cancel("slow-1", "test") == S.JOB_STATE_CANCELLED
        return events, temps

    events, temps_while_running = asyncio.run(scenario())
    assert temps_while_running, "the convert was writing its temporary file"
    final = events[-1]
    assert final.state == S.JOB_STATE_CANCELLED
    assert _error(final) == ("CANCELLED", "test")
    assert list(dirs.output.iterdir()) == []
    assert executor.running_job_ids() == []


def test_admission_errors(dirs: AgentDirs) -> None:
    source = make_disk(dirs.input / "vm.vmdk", size="8M", writes=())
    executor = new_executor(dirs, max_jobs=1)

    async def scenario() -> None:
        first = job_spec(dirs, source, job_id="a")
        executor.start(services_pb2.ExecuteJobRequest(spec=first, attempt=1))
        with pytest.raises(AlreadyExists):
            executor.start(services_pb2.ExecuteJobRequest(spec=first, attempt=1))
        other = job_spec(dirs, source, job_id="b")
        with pytest.raises(ResourceExhausted):
            executor.start(services_pb2.ExecuteJobRequest(spec=other, attempt=1))
        bad = job_pb2.JobSpec()
        bad.CopyFrom(other)
        bad.artifacts.output_path = "relative/path"
        with pytest.raises(InvalidArgument, match=r"artifacts\.output_path: must be an absolute"):
            executor.start(services_pb2.ExecuteJobRequest(spec=bad, attempt=1))
        await executor.shutdown()

    asyncio.run(scenario())
    last = EventLog(dirs.state).last_event("a")
    # Without a grace period a job still running is ended AGENT_SHUTDOWN (to be requeued).
    assert last is not None
    assert last.state == S.JOB_STATE_COMPLETED or _error(last)[0] == "AGENT_SHUTDOWN"
