"""Claim names, migration ids and error file names of the intake."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import pytest

from intake.naming import (
    archive_dir,
    claim_name,
    content_digest,
    dropped_name,
    error_file_name,
    migration_id_for,
    vm_name_of_document,
)
from protocol.migration_jobs import MIGRATION_ID_PATTERN

CONTENT = b'{"manifest_version": "1.0"}'
DIGEST = hashlib.sha256(CONTENT).hexdigest()[:12]


def test_a_claim_is_the_basename_and_the_content_digest() -> None:
    assert claim_name("artifact-manifest.json", CONTENT) == f"artifact-manifest.json.{DIGEST}"
    assert dropped_name(claim_name("artifact-manifest.json", CONTENT)) == "artifact-manifest.json"


def test_two_drops_with_one_name_get_two_claims() -> None:
    assert claim_name("m.json", b"{1}") != claim_name("m.json", b"{2}")


def test_the_migration_id_comes_from_the_vm_and_the_content() -> None:
    assert migration_id_for("web-01", CONTENT) == f"web-01-{DIGEST}"
    assert migration_id_for("web-01", CONTENT) == migration_id_for("web-01", CONTENT)
    assert migration_id_for("web-01", CONTENT) != migration_id_for("web-01", CONTENT + b" ")


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("Web Server #1", "Web-Server-1-"),
        ("..hidden", "hidden-"),
        ("日本", "vm-"),
        ("-x-", "x-"),
        ("a" * 300, "a" * 45 + "-"),
    ],
)
def test_the_migration_id_is_made_safe(name: str, start: str) -> None:
    mid = migration_id_for(name, CONTENT)
    assert mid.startswith(start) and mid.endswith(DIGEST)
    assert MIGRATION_ID_PATTERN.match(mid)
    # The longest job id, "<migration id>.disk.<64-character disk id>", still fits 128.
    assert len(f"{mid}.disk.{'d' * 64}") <= 128


def test_the_error_file_is_named_by_the_vm_when_it_is_safe() -> None:
    assert error_file_name("web-01", "artifact-manifest.json") == "web-01.error"
    for unsafe in ("../etc", "a/b", ".hidden", "", None):
        assert error_file_name(unsafe, "m.json") == "m.json.error"


def test_the_vm_name_is_found_even_in_half_a_document() -> None:
    whole = b'{"source": {"vm_name": "db-01"}, "disks": []}'
    assert vm_name_of_document(whole) == "db-01"
    assert vm_name_of_document(whole[:36]) == "db-01"
    assert vm_name_of_document(b'{"disks": [') is None
    assert vm_name_of_document(b"[1, 2]") is None


def test_archives_are_by_day() -> None:
    when = datetime(2026, 12, 1, 23, 59)
    assert archive_dir(Path("/q"), "failed", when) == Path("/q/failed/2026-12-01")


def test_the_digest_is_twelve_hex_digits() -> None:
    assert content_digest(CONTENT) == DIGEST and len(DIGEST) == 12
