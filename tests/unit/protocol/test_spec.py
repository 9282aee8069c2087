from __future__ import annotations

import pytest

from devsupport.specs import example, job_spec
from protocol.errors import InvalidArgument
from protocol.spec import Operation, parse_spec


@pytest.mark.parametrize("name", ["convert", "inspect", "offline-fix"])
def test_upstream_examples_are_read_unchanged(name: str) -> None:
    spec = parse_spec(example(name))
    assert spec.job_id == example(name)["job_id"]
    assert spec.artifacts.output_path == "/data/output"


def test_v1_defaults_are_applied() -> None:
    doc = job_spec()
    for key in ("requested_actions", "capability_requirements", "execution_policy", "parameters"):
        doc.pop(key)
    doc.pop("version")
    spec = parse_spec(doc)
    assert spec.version == "1.0"
    assert spec.execution_policy.retry_count == 0
    assert spec.execution_policy.timeout_seconds == 7200
    assert spec.execution_policy.idempotent is True
    assert spec.execution_policy.priority == 5
    assert spec.capability_requirements.needs_nbd is False
    assert spec.artifacts.store_fixed_image is True
    params = spec.convert_parameters()
    assert params.output_format == "qcow2"
    assert params.effective_compress is True


INVALID_CASES = [
    ({"execution_policy": {"priority": 11}}, "execution_policy.priority: must be between 1 and 10"),
    ({"execution_policy": {"priority": 0}}, "execution_policy.priority: must be between 1 and 10"),
    (
        {"execution_policy": {"retry_count": 6}},
        "execution_policy.retry_count: must be between 0 and 5",
    ),
    (
        {"execution_policy": {"timeout_seconds": 59}},
        "execution_policy.timeout_seconds: must be between 60 and 86400",
    ),
    (
        {"execution_policy": {"timeout_seconds": 86401}},
        "execution_policy.timeout_seconds: must be between 60 and 86400",
    ),
    (
        {"capability_requirements": {"min_memory_gb": 0}},
        "capability_requirements.min_memory_gb: must be at least 1",
    ),
    (
        {"capability_requirements": {"min_disk_space_gb": 0}},
        "capability_requirements.min_disk_space_gb: must be at least 1",
    ),
    ({"image": {"path": "relative/vm.vmdk"}}, "image.path: must be an absolute path"),
    ({"image": {"path": "/x.vmdk", "format": "iso"}}, "image.format: must be"),
    ({"image": {"path": "/x.vmdk", "checksum": "md5:abc"}}, "image.checksum: must be 'sha256:'"),
    ({"image": {"path": "/x.vmdk", "size_bytes": -1}}, "image.size_bytes: must be at least 0"),
    ({"artifacts": {"output_path": "out"}}, "artifacts.output_path: must be an absolute path"),
    ({"audit": {"requested_by": ""}}, "audit.requested_by: must not be empty"),
    ({"operation": "teleport"}, "operation: must be"),
    ({"version": "2.0"}, 'version: must be "1.0"'),
    ({"job_id": "../escape"}, "job_id: must be 1-128 characters"),
    (
        {"parameters": {"output_format": "vmdk"}},
        "parameters.output_format: must be 'qcow2' or 'raw'",
    ),
    (
        {"parameters": {"output_format": "raw", "compress": True}},
        "parameters.compress: raw output cannot be compressed",
    ),
    ({"surprise": 1}, "surprise: is not a v1 field"),
]


@pytest.mark.parametrize(("change", "message"), INVALID_CASES)
def test_each_rule_names_its_field(change: dict, message: str) -> None:
    doc = job_spec()
    for key, value in change.items():
        if key in ("image", "artifacts", "audit"):
            doc[key] = value if key != "audit" else {**doc["audit"], **value}
        elif isinstance(value, dict) and key in doc:
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    with pytest.raises(InvalidArgument) as caught:
        parse_spec(doc)
    assert message in caught.value.message


def test_every_violation_is_reported_at_once() -> None:
    doc = job_spec(execution_policy={"priority": 11, "retry_count": 9})
    del doc["audit"]
    with pytest.raises(InvalidArgument) as caught:
        parse_spec(doc)
    text = caught.value.message
    assert "execution_policy.priority" in text
    assert "execution_policy.retry_count" in text
    assert "audit: is required" in text


def test_required_fields() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_spec({"job_id": "a"})
    for field in ("operation", "image", "artifacts", "audit"):
        assert f"{field}: is required" in caught.value.message


def test_fingerprint_ignores_created_at_but_not_content() -> None:
    doc = job_spec(job_id="same")
    a = parse_spec(doc)
    b = parse_spec({**doc, "created_at": "2026-01-01T00:00:00Z"})
    c = parse_spec({**doc, "execution_policy": {**doc["execution_policy"], "priority": 1}})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.operation is Operation.CONVERT


def test_non_object_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="spec: must be a JSON object"):
        parse_spec(["not", "a", "dict"])
