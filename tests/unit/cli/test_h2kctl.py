"""h2kctl end to end against a JobService double: local validation, submit, watch, reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.agents import parse_duration
from cli.main import app
from protocol.gen.h2k.v1 import job_pb2
from tests.support.job_service_double import convert_events

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


def h2kctl(address: str, *args: str, stdin: str | None = None):
    return CliRunner().invoke(app, ["--server", address, "--insecure", *args], input=stdin)


def copy_example(source: Path, tmp_path: Path) -> Path:
    """The example as a user would adapt it: same fields, paths of this machine."""
    document = json.loads(source.read_text())
    document["image"]["path"] = str(tmp_path / "input" / "vm.vmdk")
    document["artifacts"]["output_path"] = str(tmp_path / "output")
    target = tmp_path / source.name
    target.write_text(json.dumps(document))
    return target


def test_there_are_three_examples():
    assert [p.name for p in EXAMPLE_FILES] == [
        "convert-job.json",
        "inspect-job.json",
        "offline-fix-job.json",
    ]


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_submit_accepts_each_example_and_prints_only_the_job_id(control_plane, tmp_path, example):
    job_file = copy_example(example, tmp_path)
    job_id = json.loads(job_file.read_text())["job_id"]

    result = h2kctl(control_plane.address, "submit", str(job_file))

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{job_id}\n"
    [sent] = control_plane.service.submitted
    assert sent.job_id == job_id
    assert sent.artifacts.output_path == str(tmp_path / "output")


def test_submit_reads_stdin_and_reports_an_identical_resubmission(control_plane):
    text = (EXAMPLES / "convert-job.json").read_text()

    first = h2kctl(control_plane.address, "submit", "-", stdin=text)
    second = h2kctl(control_plane.address, "submit", "-", stdin=text)

    assert first.exit_code == 0 and second.exit_code == 0
    assert first.stdout == second.stdout == "convert-example-001\n"
    assert "already exists" not in first.stderr
    assert "convert-example-001 already exists with the same spec" in second.stderr


def test_submit_of_an_invalid_file_names_every_field_and_sends_nothing(control_plane, tmp_path):
    document = json.loads((EXAMPLES / "convert-job.json").read_text())
    document["job_id"] = "no spaces allowed"
    document["execution_policy"]["priority"] = 11
    document["image"]["path"] = "relative/vm.vmdk"
    document["parameters"] = {"output_format": "raw", "compress": True}
    del document["audit"]
    job_file = tmp_path / "bad.json"
    job_file.write_text(json.dumps(document))

    result = h2kctl(control_plane.address, "submit", str(job_file))

    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    for field in ("job_id", "execution_policy.priority", "image.path", "audit"):
        assert any(line.startswith(f"{field}: ") for line in lines), (field, lines)
    assert any(line.startswith("parameters.compress: ") for line in lines), lines
    assert control_plane.service.submitted == []


def test_submit_of_a_file_that_is_not_json_exits_2(control_plane, tmp_path):
    job_file = tmp_path / "broken.json"
    job_file.write_text("{not json")

    result = h2kctl(control_plane.address, "submit", str(job_file))

    assert result.exit_code == 2
    assert "is not valid JSON" in result.stderr
    assert control_plane.service.submitted == []


def test_watch_prints_a_line_per_event_and_exits_0_when_completed(control_plane):
    control_plane.service.add_job(
        "job-ok", job_pb2.JOB_STATE_COMPLETED, convert_events("job-ok", 4)
    )

    result = h2kctl(control_plane.address, "watch", "job-ok")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "seq=1 state=RUNNING phase=start 0.0%"
    assert lines[2] == "seq=3 state=PROGRESSING phase=convert 66.7% 682.7 MiB/1.0 GiB converting"
    assert lines[3] == "seq=4 state=COMPLETED phase=done 100.0%"
    assert "final state=COMPLETED" in lines
    assert any("path=/out/vm.qcow2" in line for line in lines)


def test_watch_exits_1_when_the_job_failed_and_shows_the_error(control_plane):
    events = convert_events("job-bad", 3, final=job_pb2.JOB_STATE_FAILED)
    control_plane.service.add_job("job-bad", job_pb2.JOB_STATE_FAILED, events)

    result = h2kctl(control_plane.address, "watch", "job-bad", "--after-seq", "1")

    assert result.exit_code == 1
    assert [line.split()[0] for line in result.stdout.splitlines()[:2]] == ["seq=2", "seq=3"]
    assert "final state=FAILED" in result.stdout
    assert "phase=convert code=TOOL_FAILED message=qemu-img exited 1" in result.stderr


def test_get_json_and_events_json(control_plane):
    control_plane.service.add_job("job-1", job_pb2.JOB_STATE_COMPLETED, convert_events("job-1", 4))

    got = h2kctl(control_plane.address, "get", "job-1", "-o", "json")
    events = h2kctl(control_plane.address, "events", "job-1", "-o", "json", "--after-seq", "1")

    assert got.exit_code == 0
    assert json.loads(got.stdout)["state"] == "COMPLETED"
    assert events.exit_code == 0
    assert [json.loads(line)["seq"] for line in events.stdout.splitlines()] == [2, 3, 4]


def test_list_follows_pages_and_filters_states_in_any_case(control_plane):
    for n in range(250):
        state = job_pb2.JOB_STATE_QUEUED if n % 2 else job_pb2.JOB_STATE_COMPLETED
        control_plane.service.add_job(f"job-{n:03d}", state, [])

    everything = h2kctl(control_plane.address, "list", "-o", "json")
    queued = h2kctl(control_plane.address, "list", "--state", "queued", "-o", "json")

    assert len(json.loads(everything.stdout)) == 250
    assert {job["state"] for job in json.loads(queued.stdout)} == {"QUEUED"}
    assert len(json.loads(queued.stdout)) == 125


def test_cancel_prints_the_resulting_state(control_plane):
    control_plane.service.add_job("job-c", job_pb2.JOB_STATE_QUEUED, [])

    result = h2kctl(control_plane.address, "cancel", "job-c", "--reason", "wrong image")

    assert result.exit_code == 0
    assert result.stdout == "CANCELLED\n"


def test_unknown_job_is_one_error_line_and_exit_1(control_plane):
    result = h2kctl(control_plane.address, "get", "nope")

    assert result.exit_code == 1
    assert result.stderr == "error: NOT_FOUND: job nope not found\n"


def test_unreachable_control_plane_is_named_without_a_traceback():
    result = h2kctl("127.0.0.1:1", "--timeout", "5", "get", "job-1")

    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: UNAVAILABLE: the control plane at 127.0.0.1:1 cannot be reached"
    )
    assert "Traceback" not in result.output


def test_watch_survives_a_broken_stream_and_says_why_it_waited(control_plane):
    control_plane.service.add_job("job-r", job_pb2.JOB_STATE_COMPLETED, convert_events("job-r", 5))
    control_plane.service.break_before_seq = 3

    result = h2kctl(control_plane.address, "watch", "job-r")

    assert result.exit_code == 0, result.output
    seqs = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("seq=")]
    assert seqs == ["seq=1", "seq=2", "seq=3", "seq=4", "seq=5"]
    assert "event=watch_reconnect job_id=job-r after_seq=2" in result.stderr


def test_submit_watch_prints_the_id_then_follows(control_plane, tmp_path):
    job_file = copy_example(EXAMPLES / "inspect-job.json", tmp_path)
    control_plane.service.add_job(
        "inspect-example-001", job_pb2.JOB_STATE_COMPLETED, convert_events("inspect-example-001", 3)
    )

    result = h2kctl(control_plane.address, "submit", "--watch", str(job_file))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "inspect-example-001"
    assert lines[1].startswith("seq=1 state=RUNNING")
    assert "final state=COMPLETED" in lines


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400)]
)
def test_drain_deadlines(text, seconds):
    assert parse_duration(text) == seconds


def test_drain_rejects_a_deadline_that_is_not_a_duration():
    result = CliRunner().invoke(app, ["agents", "drain", "node-a", "--deadline", "soon"])

    assert result.exit_code == 2
    assert "not a duration" in result.output
