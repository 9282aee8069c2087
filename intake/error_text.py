"""The text of ``<vm>.error`` files (pure).

HyperSDK takes the whole content of ``<output dir>/<vm>.error`` as the error of the export, so
the first line is the one a person acts on; the lines after it are the detail.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.gen.h2k.v1 import job_pb2, migration_pb2

MORE = "more: h2kctl migrations get {migration_id}"


def _state(value: int) -> str:
    return migration_pb2.MigrationState.Name(value).removeprefix("MIGRATION_STATE_")


def _job_state(value: int) -> str:
    return job_pb2.JobState.Name(value).removeprefix("JOB_STATE_") if value else "-"


def _lines(first: str, detail: Sequence[str]) -> str:
    return "\n".join([first, *detail]) + "\n"


def migration_failure(m: migration_pb2.Migration) -> str:
    """Why a FAILED or CANCELLED migration ended: the reason first, then every job's error."""
    mid = m.spec.migration_id
    reason = m.reason or "no reason given"
    if m.state == migration_pb2.MIGRATION_STATE_CANCELLED:
        first = f"migration {mid} was cancelled: {reason}"
    else:
        first = f"migration {mid} failed: {reason}"
    detail = [
        f"migration: {mid}",
        f"vm: {m.spec.vm.name}",
        f"state: {_state(m.state)} (stage {m.stage or '-'})",
    ]
    for job in m.jobs:
        what = f"disk {job.disk_id}, {job.role}" if job.disk_id else job.role
        line = f"job {job.job_id} ({what}): {_job_state(job.state)}"
        detail.append(f"{line}: {job.error}" if job.error else line)
    detail.append(MORE.format(migration_id=mid))
    return _lines(first, detail)


def manifest_refused(manifest: str, problems: Sequence[str]) -> str:
    """A manifest that is not a valid Artifact Manifest v1: the first problem, then all."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    first = f"manifest {manifest} refused: {problems[0] if problems else 'invalid'}{more}"
    return _lines(first, [f"problem: {p}" for p in problems])


def control_plane_refused(manifest: str, migration_id: str, code: str, message: str) -> str:
    """SubmitMigration answered with an error that a new drop, not a retry, must fix."""
    first = f"migration {migration_id} refused by the control plane: {code}: {message}"
    return _lines(first, [f"manifest: {manifest}", f"migration: {migration_id}"])


def incomplete_drop(manifest: str, grace_seconds: float, why: str) -> str:
    """A drop that never became a complete JSON document."""
    first = f"manifest {manifest} was not a complete JSON document after {grace_seconds:g} s: {why}"
    return _lines(first, ["the drop was moved to failed/ and will not be migrated"])


def existing_output(vm_name: str, output_dir: str, migration_id: str) -> str:
    """A new manifest for a VM whose boot disk is already in the output directory."""
    first = (
        f"{vm_name}.qcow2 exists from an earlier run; move it away or start h2k-intake with "
        "--replace-existing"
    )
    return _lines(
        first,
        [
            f"output directory: {output_dir}",
            f"migration {migration_id} was not submitted",
        ],
    )


def missing_output(m: migration_pb2.Migration, boot_disk: str) -> str:
    """A COMPLETED migration whose boot disk is not where HyperSDK looks for it."""
    mid = m.spec.migration_id
    first = (
        f"migration {mid} completed but {boot_disk} is missing: it was moved away after an "
        "earlier run of the same manifest; the same content is the same migration, export "
        "again to migrate again"
    )
    return _lines(first, [f"migration: {mid}", MORE.format(migration_id=mid)])
