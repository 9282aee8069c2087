"""Unknown fields of a submitted spec, at any depth, are named (or none when there are none)."""

from __future__ import annotations

from controlplane.submission import unknown_field_problems
from devsupport.specs import example
from protocol.conversion import spec_to_proto
from protocol.spec import parse_spec


def _with_unknown(msg, number: int):
    """``msg`` as a newer client's message: a varint field ``number`` appended."""
    return type(msg).FromString(msg.SerializeToString() + bytes([number << 3]) + b"\x01")


def test_a_spec_without_unknown_fields_has_no_problems() -> None:
    assert unknown_field_problems(spec_to_proto(parse_spec(example("convert")))) == []


def test_unknown_fields_are_named_at_every_depth() -> None:
    msg = spec_to_proto(parse_spec(example("convert")))
    msg.image.CopyFrom(_with_unknown(msg.image, 9))
    msg.audit.CopyFrom(_with_unknown(msg.audit, 10))
    spec = _with_unknown(msg, 15)
    assert unknown_field_problems(spec) == [
        "spec: field number 15 is not a v1 field",
        "image: field number 9 is not a v1 field",
        "audit: field number 10 is not a v1 field",
    ]
