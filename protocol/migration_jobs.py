"""The parameters of the jobs a VM migration is made of (the control plane writes them).

A migration's disk jobs are ordinary v1 jobs (``convert`` for data disks, ``offline_fix`` and
the other repair operations for the boot disk) whose ``parameters.migration`` object says where
their output goes and what they read; :data:`Operation.MIGRATION_PUBLISH` and
:data:`Operation.MIGRATION_CLEANUP` jobs finish or undo a migration on an agent.

Outputs of a migration are first written under a *staged* name in the output directory (a
hidden file, see :func:`staged_name`), so nothing appears at a final path until the publish
job renames them: every non-boot file first, the boot disk (``<vm>.<format>``, the file HyperSDK
waits for) last.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from protocol.errors import InvalidArgument
from protocol.spec import (
    MAX_LIST_ITEMS,
    AbsolutePath,
    JobSpec,
    OutputFormat,
    format_validation_error,
)

MIGRATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_DOCUMENT_BYTES = 48 * 1024
_FORBIDDEN_IN_NAME = re.compile(r"[/\x00-\x1f\x7f]")


def _file_name(value: str) -> str:
    if not value or value in (".", "..") or _FORBIDDEN_IN_NAME.search(value):
        raise ValueError("must be a plain file name (no '/', no control characters)")
    if len(value.encode()) > 255:
        raise ValueError("must be at most 255 bytes")
    return value


def _migration_id(value: str) -> str:
    if not MIGRATION_ID_PATTERN.match(value):
        raise ValueError(
            "must be 1-100 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


FileName = Annotated[str, AfterValidator(_file_name)]
MigrationId = Annotated[str, AfterValidator(_migration_id)]


def staged_name(migration_id: str, final_name: str) -> str:
    """The hidden name a migration's output has until it is published."""
    return f".{final_name}.h2k-{migration_id}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttachedOutput(_Strict):
    """Another disk of the VM, already written by this migration, attached for the repair."""

    disk_id: str = Field(min_length=1, max_length=128)
    path: AbsolutePath
    format: OutputFormat


class _MigrationJob(_Strict):
    migration_id: MigrationId
    # The agent this job must run on (the one holding the VM's other outputs); the scheduler
    # places the job there only. Agents do not act on it.
    pinned_agent: str | None = Field(default=None, min_length=1, max_length=256)


class DiskJobParameters(_MigrationJob):
    """``parameters.migration`` of a disk job (convert or a repair operation)."""

    disk_id: str = Field(min_length=1, max_length=128)
    # The output's file name in artifacts.output_path (instead of <input stem>.<format>).
    output_name: FileName
    # The source is the byte range [source_offset, source_offset + source_size) of image.path
    # (a disk inside an OVA); source_size None: to the end of the file.
    source_offset: int = Field(default=0, ge=0)
    source_size: int | None = Field(default=None, ge=1)
    # After writing, compare the output with the source (qemu-img compare) before completing.
    verify_content: bool = False
    # Repair only: the VM's other disks, attached with the boot disk so the guest is whole.
    attach_outputs: list[AttachedOutput] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


class PublishFile(_Strict):
    """One staged output and the final name it gets."""

    staged: FileName
    final: FileName
    kind: Literal["disk", "definition", "report"]
    format: OutputFormat | None = None  # disks: checked with qemu-img check before renaming


class PublishParameters(_MigrationJob):
    """``parameters.migration`` of a migration_publish job (artifacts.output_path: the
    output directory). Documents are written staged first; files are renamed in order, and
    the control plane puts the boot disk last."""

    files: list[PublishFile] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    # Staged file name -> content (the libvirt domain, the KubeVirt manifest, the report).
    documents: dict[FileName, str] = Field(default_factory=dict, max_length=8)


class CleanupParameters(_MigrationJob):
    """``parameters.migration`` of a migration_cleanup job: staged outputs to remove."""

    staged: list[FileName] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


def _parse(model: type[_Strict], spec: JobSpec) -> Any:
    raw = spec.parameters.get("migration")
    if not isinstance(raw, dict):
        raise InvalidArgument("parameters.migration: must be an object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidArgument(
            "; ".join(format_validation_error(exc, prefix="parameters.migration."))
        ) from None


def disk_job_parameters(spec: JobSpec) -> DiskJobParameters | None:
    """The migration parameters of a disk job, or None for a job outside any migration."""
    if "migration" not in spec.parameters:
        return None
    parameters: DiskJobParameters = _parse(DiskJobParameters, spec)
    return parameters


def publish_parameters(spec: JobSpec) -> PublishParameters:
    parameters: PublishParameters = _parse(PublishParameters, spec)
    return parameters


def cleanup_parameters(spec: JobSpec) -> CleanupParameters:
    parameters: CleanupParameters = _parse(CleanupParameters, spec)
    return parameters


def pinned_agent(spec: JobSpec) -> str | None:
    """The agent a migration's job must run on (None: any), read without validation."""
    raw = spec.parameters.get("migration")
    value = raw.get("pinned_agent") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and value else None
