from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from devsupport.specs import example, job_spec
from protocol.conversion import (
    event_from_json,
    event_to_json,
    spec_document_from_proto,
    spec_from_proto,
    spec_to_proto,
    state_from_proto,
    state_to_proto,
    timestamp_to_proto,
)
from protocol.errors import InvalidArgument
from protocol.gen.h2k.v1 import job_pb2
from protocol.spec import parse_spec
from protocol.states import JobState


@pytest.mark.parametrize("name", ["convert", "inspect", "offline-fix"])
def test_spec_round_trips_through_protobuf(name: str) -> None:
    spec = parse_spec(example(name))
    again = spec_from_proto(spec_to_proto(spec))
    assert again == spec
    assert again.fingerprint() == spec.fingerprint()


def test_defaults_survive_protobuf_when_unset() -> None:
    doc = job_spec()
    doc.pop("execution_policy")
    spec = spec_from_proto(spec_to_proto(parse_spec(doc)))
    assert spec.execution_policy.timeout_seconds == 7200


def test_empty_protobuf_spec_names_missing_fields() -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec_from_proto(job_pb2.JobSpec())
    for field in ("job_id", "operation", "image", "artifacts", "audit"):
        assert f"{field}: is required" in caught.value.message


def test_states_map_both_ways() -> None:
    for state in JobState:
        assert state_from_proto(state_to_proto(state)) is state


def test_event_json_lines_round_trip() -> None:
    event = job_pb2.ProgressEvent(
        job_id="j",
        seq=3,
        phase="convert",
        progress_percent=42.5,
        bytes_done=1 << 40,
        state=job_pb2.JOB_STATE_PROGRESSING,
        details={"k": "v"},
    )
    line = event_to_json(event)
    assert "\n" not in line
    assert event_from_json(line) == event


def _events_of_every_shape() -> list[job_pb2.ProgressEvent]:
    stamp = timestamp_to_proto(datetime(2026, 12, 2, 4, 5, 6, 789012, tzinfo=UTC))
    plain = job_pb2.ProgressEvent(
        job_id="job-1",
        seq=(1 << 62) + 5,
        time=stamp,
        phase="convert",
        progress_percent=12.345678901234,
        bytes_done=1 << 40,
        bytes_total=(1 << 40) + 1,
        message='quote " backslash \\ newline \n unicode ü',
        details={"reported_by": "agent", "empty": ""},
        state=job_pb2.JOB_STATE_PROGRESSING,
        attempt=2,
        agent="node-a",
    )
    ended = job_pb2.ProgressEvent()
    ended.CopyFrom(plain)
    ended.state = job_pb2.JOB_STATE_FAILED
    ended.result.error.code = "TOOL_FAILED"
    ended.result.error.message = "qemu-img exited 1"
    return [
        plain,
        ended,
        job_pb2.ProgressEvent(),
        job_pb2.ProgressEvent(job_id="j", seq=1, progress_percent=100),
        job_pb2.ProgressEvent(job_id="j", bytes_done=-1),
        job_pb2.ProgressEvent(job_id="j", progress_percent=float("nan")),
        job_pb2.ProgressEvent(job_id="j", progress_percent=float("inf")),
        job_pb2.ProgressEvent(job_id="j", state=cast(job_pb2.JobState, 99)),
    ]


def test_event_json_is_the_document_json_format_writes() -> None:
    # The direct encoder must write what the generic one does, field for field, and read
    # back both its own records and json_format's.
    for event in _events_of_every_shape():
        ours = event_to_json(event)
        generic = json_format.MessageToJson(event, indent=None, preserving_proto_field_name=True)
        assert json.loads(ours) == json.loads(generic), event
        for line in (ours, generic):
            back = event_from_json(line)
            if math.isnan(event.progress_percent):  # NaN equals nothing, itself included
                assert math.isnan(back.progress_percent)
                assert back.SerializeToString() == event.SerializeToString()
            else:
                assert back == event


def test_a_record_that_is_no_event_is_refused_naming_the_field() -> None:
    for line in ('{"seq": "x"}', '{"nope": 1}', '{"time": "yesterday"}', "[1]", "{"):
        with pytest.raises(json_format.ParseError):
            event_from_json(line)


def _json_format_document(msg: job_pb2.JobSpec) -> dict[str, object]:
    """What spec_document_from_proto gave when it went through json_format (the reference)."""
    doc = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    doc.pop("operation", None)
    if msg.operation:
        name = job_pb2.Operation.Name(msg.operation) if msg.operation in OPERATION_NUMBERS else ""
        doc["operation"] = (
            name.removeprefix("OPERATION_").lower() if name else f"unknown({msg.operation})"
        )
    if msg.HasField("image") and msg.image.HasField("size_bytes"):
        doc["image"]["size_bytes"] = msg.image.size_bytes
    return doc


OPERATION_NUMBERS = set(job_pb2.Operation.values())


def _every_field_set() -> job_pb2.JobSpec:
    msg = spec_to_proto(parse_spec(example("convert")))
    msg.image.checksum = "sha256:" + "0" * 64
    msg.image.size_bytes = 2**40
    msg.requested_actions.extend(["a", "b"])
    msg.capability_requirements.min_memory_gb = 0  # set to the default: still "set"
    msg.audit.tags.update({"team": "x", "": "empty key"})
    msg.parameters.update({"n": 1, "nested": {"list": [1, 2.5, "s", None, True, {"k": []}]}})
    msg.parameters.fields["unset"].Clear()  # a Value with no kind: null
    msg.created_at.FromJsonString("2026-03-01T09:30:00.123456Z")
    return msg


@pytest.mark.parametrize(
    "build",
    [
        lambda: job_pb2.JobSpec(),
        lambda: spec_to_proto(parse_spec(example("inspect"))),
        lambda: spec_to_proto(parse_spec(example("offline-fix"))),
        _every_field_set,
        lambda: job_pb2.JobSpec(operation=99, image=job_pb2.ImageRef(), audit=job_pb2.Audit()),
        lambda: job_pb2.JobSpec(image=job_pb2.ImageRef(format="", size_bytes=-1)),
    ],
)
def test_spec_document_is_what_json_format_gives(build) -> None:
    msg = build()
    assert spec_document_from_proto(msg) == _json_format_document(msg)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda m: setattr(m.created_at, "seconds", 253402300800),  # year 10000
        lambda m: setattr(m.created_at, "nanos", 1_000_000_000),
        lambda m: m.parameters.update({"x": float("nan")}),
        lambda m: m.parameters.update({"x": {"y": [float("inf")]}}),
    ],
)
def test_values_json_cannot_express_are_refused_naming_the_field_as_before(spoil) -> None:
    msg = _every_field_set()
    spoil(msg)
    with pytest.raises(json_format.SerializeToJsonError) as reference:
        json_format.MessageToDict(msg, preserving_proto_field_name=True)
    field, _, rule = str(reference.value).removeprefix("Failed to serialize ").partition(" field: ")
    with pytest.raises(InvalidArgument) as caught:
        spec_document_from_proto(msg)
    assert caught.value.message == f"{field}: {rule.rstrip('.')}"


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000),  # naive: UTC
        datetime(2026, 5, 5, 1, 2, 3, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_timestamps_are_what_from_datetime_gives(value: datetime) -> None:
    reference = Timestamp()
    reference.FromDatetime(value)
    assert timestamp_to_proto(value) == reference
