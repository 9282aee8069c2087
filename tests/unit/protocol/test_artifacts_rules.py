"""Artifacts combinations that cannot mean anything are refused naming the field."""

from __future__ import annotations

import pytest

from devsupport.specs import job_spec
from protocol.errors import InvalidArgument
from protocol.spec import parse_spec


@pytest.mark.parametrize(
    ("operation", "artifacts", "field"),
    [
        ("convert", {"store_fixed_image": False}, "artifacts.store_fixed_image"),
        ("convert", {"keep_intermediates": True}, "artifacts.keep_intermediates"),
        ("inspect", {"keep_intermediates": True}, "artifacts.keep_intermediates"),
    ],
)
def test_refused_naming_the_field(operation: str, artifacts: dict, field: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{field}: "):
        parse_spec(job_spec(operation, artifacts=artifacts))


@pytest.mark.parametrize(
    ("operation", "artifacts"),
    [
        ("offline_fix", {"store_fixed_image": False}),  # the report only
        ("offline_fix", {"keep_intermediates": True}),
        ("inspect", {"store_fixed_image": False}),
        ("inspect", {"store_fixed_image": True}),  # the default, explicit on the wire
        ("convert", {"store_fixed_image": True, "log_upload": True}),
    ],
)
def test_accepted(operation: str, artifacts: dict) -> None:
    parse_spec(job_spec(operation, artifacts=artifacts))
