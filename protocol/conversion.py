"""Conversion between the hand-written models and the generated protobuf messages.

Everything that crosses a gRPC edge goes through here; the rest of the code talks in
pydantic models, dataclasses and :class:`~protocol.states.JobState`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from protocol.errors import InvalidArgument
from protocol.gen.h2k.v1 import agent_pb2, job_pb2
from protocol.spec import JobSpec, Operation, parse_spec
from protocol.states import JobState

# --- enums -----------------------------------------------------------------------------


_STATE_NUMBERS = {state: job_pb2.JobState.Value(f"JOB_STATE_{state.value}") for state in JobState}


def state_to_proto(state: JobState) -> job_pb2.JobState:
    return cast(job_pb2.JobState, _STATE_NUMBERS[state])


def state_from_proto(value: int) -> JobState:
    name = job_pb2.JobState.Name(value)
    if name == "JOB_STATE_UNSPECIFIED":
        raise InvalidArgument("state: must be set")
    return JobState(name.removeprefix("JOB_STATE_"))


def operation_to_proto(operation: Operation) -> int:
    return job_pb2.Operation.Value(f"OPERATION_{operation.value.upper()}")


def operation_from_proto(value: int) -> str | None:
    """The v1 operation name, or None when unset."""
    try:
        name = job_pb2.Operation.Name(value)
    except ValueError:
        return f"unknown({value})"
    if name == "OPERATION_UNSPECIFIED":
        return None
    return name.removeprefix("OPERATION_").lower()


def agent_state_name(value: int) -> str:
    return agent_pb2.AgentState.Name(value).removeprefix("AGENT_STATE_")


# --- timestamps and structs -------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def set_timestamp(ts: Timestamp, value: datetime) -> None:
    """``ts.FromDatetime(value)`` (a naive ``value`` is UTC) without its calendar round trip,
    which cost more than the rest of a Job message."""
    since = value - (_NAIVE_EPOCH if value.utcoffset() is None else _EPOCH)
    ts.seconds = since.days * 86400 + since.seconds
    ts.nanos = since.microseconds * 1000


def timestamp_to_proto(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    set_timestamp(ts, value)
    return ts


def timestamp_from_proto(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def dict_to_struct(value: dict[str, Any] | None) -> Struct:
    struct = Struct()
    if value:
        struct.update(value)
    return struct


def struct_to_dict(struct: Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


# --- job spec ----------------------------------------------------------------------------


def spec_to_proto(spec: JobSpec) -> job_pb2.JobSpec:
    """Convert a validated spec to protobuf (every default made explicit)."""
    caps = spec.capability_requirements
    policy = spec.execution_policy
    msg = job_pb2.JobSpec(
        version=spec.version,
        job_id=spec.job_id,
        operation=f"OPERATION_{spec.operation.value.upper()}",
        image=job_pb2.ImageRef(
            path=spec.image.path,
            format=spec.image.format.value if spec.image.format else None,
            checksum=spec.image.checksum,
            size_bytes=spec.image.size_bytes,
        ),
        requested_actions=list(spec.requested_actions),
        capability_requirements=job_pb2.CapabilityRequirements(
            needs_nbd=caps.needs_nbd,
            needs_lvm=caps.needs_lvm,
            needs_mount=caps.needs_mount,
            needs_selinux_tools=caps.needs_selinux_tools,
            min_memory_gb=caps.min_memory_gb,
            min_disk_space_gb=caps.min_disk_space_gb,
        ),
        execution_policy=job_pb2.ExecutionPolicy(
            retry_count=policy.retry_count,
            timeout_seconds=policy.timeout_seconds,
            idempotent=policy.idempotent,
            priority=policy.priority,
        ),
        artifacts=job_pb2.Artifacts(
            output_path=spec.artifacts.output_path,
            log_upload=spec.artifacts.log_upload,
            store_fixed_image=spec.artifacts.store_fixed_image,
            keep_intermediates=spec.artifacts.keep_intermediates,
        ),
        audit=job_pb2.Audit(
            requested_by=spec.audit.requested_by,
            ticket=spec.audit.ticket,
            tags=dict(spec.audit.tags),
        ),
        parameters=dict_to_struct(spec.parameters),
    )
    created_at = timestamp_to_proto(spec.created_at)
    if created_at is not None:
        msg.created_at.CopyFrom(created_at)
    return msg


def spec_document_from_proto(msg: job_pb2.JobSpec) -> dict[str, Any]:
    """The v1 JSON document a protobuf spec stands for (only the fields that were set).

    What ``json_format.MessageToDict(msg, preserving_proto_field_name=True)`` gives, built
    from each message's set fields directly (the well-known types, Struct and Timestamp, still
    through ``json_format``); the operation by its v1 name, size_bytes as a number.

    Raises:
        InvalidArgument: a well-known type holds a value JSON cannot express (a Timestamp
            outside years 1-9999 or with nanos outside 0-999999999, a NaN in a Struct).
    """
    doc = _message_document(msg)
    doc.pop("operation", None)
    operation = operation_from_proto(msg.operation)
    if operation is not None:
        doc["operation"] = operation
    if msg.HasField("image") and msg.image.HasField("size_bytes"):
        doc["image"]["size_bytes"] = msg.image.size_bytes
    return doc


def _message_document(msg: Message) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for field, value in msg.ListFields():
        try:
            doc[field.name] = _converter(field)(value)
        except ValueError as exc:
            # json_format names the field whose value it could not write: "field: rule".
            raise InvalidArgument(f"{field.name}: {exc}".rstrip(".")) from None
    return doc


_INT64_TYPES = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
_UNWRITTEN_TYPES = frozenset({FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE})


@functools.cache
def _converter(field: FieldDescriptor) -> Callable[[Any], Any]:
    """How json_format writes a value of ``field`` (made once per field)."""
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        convert_value = _converter(message_type.fields_by_name["value"])
        return lambda value: {_map_key(k): convert_value(v) for k, v in value.items()}
    if field.is_repeated:
        convert_item = _single_converter(field)
        return lambda value: [convert_item(item) for item in value]
    return _single_converter(field)


def _single_converter(field: FieldDescriptor) -> Callable[[Any], Any]:
    message_type = field.message_type
    if message_type is not None:
        if message_type.full_name == Struct.DESCRIPTOR.full_name:
            return _struct_or_refusal
        if message_type.full_name.startswith("google.protobuf."):
            return _well_known_document
        return _message_document
    if field.enum_type is not None:
        names = {v.number: v.name for v in field.enum_type.values}
        return lambda value: names.get(value, value)
    if field.cpp_type in _INT64_TYPES:
        return str
    if field.cpp_type in _UNWRITTEN_TYPES or field.type == FieldDescriptor.TYPE_BYTES:
        # json_format spells these its own way (NaN, base64); no v1 spec field is one.
        raise TypeError(f"{field.full_name}: no JSON writer for its type here")
    return _same


def _same(value: Any) -> Any:
    return value


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


class _NotFinite(Exception):
    """A Struct holds a number JSON has no spelling for."""


def _struct_or_refusal(struct: Struct) -> dict[str, Any]:
    try:
        return _struct_document(struct)
    except _NotFinite:
        return cast(dict[str, Any], _well_known_document(struct))  # raises json_format's error


def _struct_document(struct: Struct) -> dict[str, Any]:
    return {key: _value_document(value) for key, value in struct.fields.items()}


def _value_document(value: Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            raise _NotFinite
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct_document(value.struct_value)
    if kind == "list_value":
        return [_value_document(item) for item in value.list_value.values]
    return None  # null_value, or nothing set


def _well_known_document(msg: Message) -> Any:
    try:
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)
    except json_format.SerializeToJsonError as exc:
        raise ValueError(str(exc)) from None


def spec_from_proto(msg: job_pb2.JobSpec) -> JobSpec:
    """Validate a protobuf spec.

    Raises:
        InvalidArgument: naming every violated field and rule.
    """
    return parse_spec(spec_document_from_proto(msg))


# --- progress events ----------------------------------------------------------------------


# How the plain fields of a ProgressEvent are written in its JSON (proto3's JSON mapping, with
# the proto field names): strings and 32-bit integers as they are, 64-bit integers as strings.
# A field not named here (the result, a field added later) sends the event through
# json_format, so an event's JSON never loses a field.
_EVENT_TEXT_FIELDS = frozenset({"job_id", "phase", "message", "agent"})
_EVENT_INT64_FIELDS = frozenset({"seq", "bytes_done", "bytes_total"})
_EVENT_ENCODER = json.JSONEncoder(separators=(",", ":"))
_EVENT_STATE_NAMES = {number: name for name, number in job_pb2.JobState.items()}


def event_to_json(event: job_pb2.ProgressEvent) -> str:
    """One JSON record of an event (an event log's line, a stored event's body).

    The same document ``json_format.MessageToJson`` writes, built directly for an event of
    plain fields (every progress event but the last of an attempt): the generic encoder costs
    more than the store write the event is part of.
    """
    body: dict[str, Any] = {}
    for descriptor, value in event.ListFields():
        name = descriptor.name
        if name in _EVENT_TEXT_FIELDS or name == "attempt":
            body[name] = value
        elif name in _EVENT_INT64_FIELDS:
            body[name] = str(value)
        elif name == "progress_percent" and math.isfinite(value):
            body[name] = value
        elif name == "time":
            body[name] = value.ToJsonString()
        elif name == "details":
            body[name] = dict(value)
        elif name == "state" and value in _EVENT_STATE_NAMES:
            body[name] = _EVENT_STATE_NAMES[value]
        else:
            return json_format.MessageToJson(event, indent=None, preserving_proto_field_name=True)
    return _EVENT_ENCODER.encode(body)


def event_from_json(line: str) -> job_pb2.ProgressEvent:
    """An event from its JSON record (what :func:`event_to_json` or json_format wrote).

    Raises:
        json_format.ParseError: the record is not a ProgressEvent.
    """
    try:
        body = json.loads(line)
    except ValueError as exc:
        raise json_format.ParseError(f"not a JSON record: {exc}") from exc
    if not isinstance(body, dict) or not _plain_event(body):
        return json_format.Parse(line, job_pb2.ProgressEvent())
    try:
        return _plain_event_from(body)
    except (ValueError, TypeError):
        # json_format says what is wrong with it.
        return json_format.Parse(line, job_pb2.ProgressEvent())


def _plain_event_from(body: dict[str, Any]) -> job_pb2.ProgressEvent:
    event = job_pb2.ProgressEvent()
    for name, value in body.items():
        if name == "time":
            event.time.FromJsonString(value)
        elif name == "details":
            event.details.update(value)
        elif name == "state":
            event.state = cast(job_pb2.JobState, job_pb2.JobState.Value(value))
        elif name in _EVENT_INT64_FIELDS:
            setattr(event, name, int(value))
        else:
            setattr(event, name, value)
    return event


def _plain_event(body: dict[str, Any]) -> bool:
    """Whether a record holds only plain fields of the types event_to_json writes them in
    (anything else, e.g. a result or a number written another way, goes to json_format)."""
    for name, value in body.items():
        if name in _EVENT_TEXT_FIELDS:
            ok = isinstance(value, str)
        elif name in _EVENT_INT64_FIELDS:
            ok = isinstance(value, str) and value.isdigit()
        elif name == "attempt":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif name == "progress_percent":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif name in ("time", "state"):
            ok = isinstance(value, str)
        elif name == "details":
            ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        else:
            ok = False
        if not ok:
            return False
    return True


def event_state(event: job_pb2.ProgressEvent) -> JobState | None:
    """The job state an event reports, or None when it carries none."""
    if event.state == job_pb2.JOB_STATE_UNSPECIFIED:
        return None
    return state_from_proto(event.state)
