"""Validating a submitted protobuf spec: every problem named, unknown fields included."""

from __future__ import annotations

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from protocol.conversion import spec_from_proto
from protocol.errors import InvalidArgument
from protocol.gen.h2k.v1 import job_pb2
from protocol.migration_jobs import disk_job_parameters
from protocol.spec import JobSpec


def unknown_field_problems(msg: Message, path: str = "") -> list[str]:
    """Fields the sender set that this server's contract does not define.

    A newer client's field would otherwise be dropped without a word; for a job spec that
    would run something other than what was asked.
    """
    if not path and _without_unknown_fields(msg).ByteSize() == msg.ByteSize():
        return []  # the usual case, told by two C calls instead of a walk of every message
    unknown = UnknownFieldSet(msg)
    problems = [
        f"{path or 'spec'}: field number {unknown[i].field_number} is not a v1 field"
        for i in range(len(unknown))
    ]
    for descriptor, value in msg.ListFields():
        message_type = descriptor.message_type
        if message_type is None or message_type.GetOptions().map_entry:
            continue
        name = f"{path}.{descriptor.name}" if path else descriptor.name
        if descriptor.is_repeated:
            for index, item in enumerate(value):
                problems += unknown_field_problems(item, f"{name}[{index}]")
        else:
            problems += unknown_field_problems(value, name)
    return problems


def _without_unknown_fields(msg: Message) -> Message:
    clean = type(msg)()
    clean.CopyFrom(msg)
    clean.DiscardUnknownFields()
    return clean


def validate_submission(msg: job_pb2.JobSpec) -> JobSpec:
    """The validated spec of a SubmitJob request.

    Raises:
        InvalidArgument: naming every violated field and rule, separated by "; ".
    """
    problems = unknown_field_problems(msg)
    spec: JobSpec | None = None
    try:
        spec = spec_from_proto(msg)
    except InvalidArgument as exc:
        problems.append(exc.message)
    if spec is not None and not spec.operation.is_internal:
        try:
            disk_job_parameters(spec)
        except InvalidArgument as exc:
            problems.append(exc.message)
    if spec is not None and spec.operation.is_internal:
        problems.append(
            f"operation: {spec.operation.value} is made by the control plane for VM migrations "
            "only; submit a migration instead"
        )
    if problems or spec is None:
        raise InvalidArgument("; ".join(problems))
    return spec
