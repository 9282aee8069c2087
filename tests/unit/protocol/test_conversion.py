from __future__ import annotations

import pytest

from devsupport.specs import example, job_spec
from protocol.conversion import (
    event_from_json,
    event_to_json,
    spec_from_proto,
    spec_to_proto,
    state_from_proto,
    state_to_proto,
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
