"""The content of <vm>.error: a first line a person acts on, then the detail."""

from __future__ import annotations

from intake import error_text
from protocol.gen.h2k.v1 import job_pb2, migration_pb2


def _failed(state: int = migration_pb2.MIGRATION_STATE_FAILED) -> migration_pb2.Migration:
    return migration_pb2.Migration(
        spec=migration_pb2.MigrationSpec(
            migration_id="web-01-abc", vm=migration_pb2.VmDefinition(name="web-01")
        ),
        state=state,
        stage="disks",
        reason="disk disk-2 (convert) failed: INVALID_IMAGE: not a vmdk",
        jobs=[
            migration_pb2.MigrationJob(
                job_id="web-01-abc.disk.disk-2",
                disk_id="disk-2",
                role="convert",
                state=job_pb2.JOB_STATE_FAILED,
                error="INVALID_IMAGE: not a vmdk",
            ),
            migration_pb2.MigrationJob(job_id="web-01-abc.cleanup", role="cleanup"),
        ],
    )


def test_a_failed_migration_says_which_disk_first() -> None:
    lines = error_text.migration_failure(_failed()).splitlines()
    assert lines[0] == (
        "migration web-01-abc failed: disk disk-2 (convert) failed: INVALID_IMAGE: not a vmdk"
    )
    assert (
        "job web-01-abc.disk.disk-2 (disk disk-2, convert): FAILED: INVALID_IMAGE: not a vmdk"
        in lines
    )
    assert "job web-01-abc.cleanup (cleanup): -" in lines
    assert lines[-1] == "more: h2kctl migrations get web-01-abc"


def test_a_cancelled_migration_says_so() -> None:
    text = error_text.migration_failure(_failed(migration_pb2.MIGRATION_STATE_CANCELLED))
    assert text.startswith("migration web-01-abc was cancelled: ")


def test_a_refused_manifest_names_its_first_problem_and_counts_the_rest() -> None:
    text = error_text.manifest_refused("m.json", ["a: bad", "b: worse"])
    assert text.splitlines() == [
        "manifest m.json refused: a: bad (and 1 more)",
        "problem: a: bad",
        "problem: b: worse",
    ]


def test_an_earlier_output_names_the_way_out() -> None:
    first = error_text.existing_output("web-01", "/out", "web-01-abc").splitlines()[0]
    assert first == (
        "web-01.qcow2 exists from an earlier run; move it away or start h2k-intake with "
        "--replace-existing"
    )
