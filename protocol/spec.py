"""The v1 job spec as a pydantic model.

Reads the upstream v1 JSON files unchanged, applies the v1 defaults and ranges, and
reports every violation at once with the field it concerns.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocol.errors import InvalidArgument

MAX_STRING = 4096
# Bounds on every list and map a client controls, so one request cannot cost unbounded memory.
MAX_LIST_ITEMS = 64
MAX_MAP_ENTRIES = 64
MAX_KEY_LENGTH = 256
MAX_PARAMETERS_BYTES = 64 * 1024
MAX_PARAMETERS_DEPTH = 8
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHECKSUM_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


class Operation(StrEnum):
    INSPECT = "inspect"
    CONVERT = "convert"
    OFFLINE_FIX = "offline_fix"
    BOOT_REPAIR = "boot_repair"
    SELINUX_PREP = "selinux_prep"
    LVM_REPAIR = "lvm_repair"
    FS_REPAIR = "fs_repair"
    INITRAMFS_REGENERATE = "initramfs_regenerate"
    # Internal to VM migrations: the control plane makes these jobs, clients may not.
    MIGRATION_PUBLISH = "migration_publish"
    MIGRATION_CLEANUP = "migration_cleanup"

    @property
    def is_internal(self) -> bool:
        """Only the control plane creates jobs of this operation (for a VM migration)."""
        return self in (Operation.MIGRATION_PUBLISH, Operation.MIGRATION_CLEANUP)


class ImageFormat(StrEnum):
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    RAW = "raw"
    VDI = "vdi"
    VHD = "vhd"
    VHDX = "vhdx"

    @property
    def qemu_driver(self) -> str:
        """The qemu block driver name (v1 says vhd, qemu says vpc)."""
        return "vpc" if self is ImageFormat.VHD else self.value


class OutputFormat(StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"


class CompressionType(StrEnum):
    """qcow2's compression method. zstd is several times faster than zlib but needs
    qemu >= 5.1 built with zstd to read the image; zlib is readable everywhere."""

    ZLIB = "zlib"
    ZSTD = "zstd"


def _between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return AfterValidator(check)


def _at_least(low: int) -> AfterValidator:
    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"must be at least {low}")
        return value

    return AfterValidator(check)


def _absolute_path(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    if len(value) > MAX_STRING:
        raise ValueError(f"must be at most {MAX_STRING} characters")
    return value


def _job_id(value: str) -> str:
    if not JOB_ID_PATTERN.match(value):
        raise ValueError(
            "must be 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _version(value: str) -> str:
    if value not in ("1", "1.0"):
        raise ValueError('must be "1.0"')
    return value


def _checksum(value: str) -> str:
    if not CHECKSUM_PATTERN.match(value):
        raise ValueError("must be 'sha256:' followed by 64 lower-case hex digits")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if len(value) > MAX_STRING:
        raise ValueError(f"must be at most {MAX_STRING} characters")
    return value


def _bounded_parameters(value: dict[str, Any]) -> dict[str, Any]:
    if _depth(value) > MAX_PARAMETERS_DEPTH:
        raise ValueError(f"must be nested at most {MAX_PARAMETERS_DEPTH} levels deep")
    size = len(json.dumps(value, separators=(",", ":"), default=str))
    if size > MAX_PARAMETERS_BYTES:
        raise ValueError(f"must be at most {MAX_PARAMETERS_BYTES} bytes as JSON, not {size}")
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
NonEmpty = Annotated[str, AfterValidator(_non_empty)]
TagKey = Annotated[str, Field(max_length=MAX_KEY_LENGTH)]
TagValue = Annotated[str, Field(max_length=MAX_STRING)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Image(_Strict):
    path: AbsolutePath
    format: ImageFormat | None = None
    checksum: Annotated[str, AfterValidator(_checksum)] | None = None
    size_bytes: Annotated[int, _at_least(0)] | None = None


class CapabilityRequirements(_Strict):
    needs_nbd: bool = False
    needs_lvm: bool = False
    needs_mount: bool = False
    needs_selinux_tools: bool = False
    min_memory_gb: Annotated[int, _at_least(1)] | None = None
    min_disk_space_gb: Annotated[int, _at_least(1)] | None = None


class ExecutionPolicy(_Strict):
    retry_count: Annotated[int, _between(0, 5)] = 0
    timeout_seconds: Annotated[int, _between(60, 86400)] = 7200
    idempotent: bool = True
    priority: Annotated[int, _between(1, 10)] = 5


class Artifacts(_Strict):
    output_path: AbsolutePath
    log_upload: bool = False
    store_fixed_image: bool = True
    keep_intermediates: bool = False


def artifacts_problem(operation: Operation, artifacts: Artifacts) -> str | None:
    """Why ``artifacts`` cannot mean anything for ``operation`` ("field: reason"), or None.

    The repair operations take every combination (``store_fixed_image: false``: the report
    only; ``keep_intermediates``: their working files are kept). Inspect writes no image
    whatever ``store_fixed_image`` says (the default, true, travels explicitly in the proto,
    so the two cannot be told apart).
    """
    if operation is Operation.CONVERT and not artifacts.store_fixed_image:
        return (
            "artifacts.store_fixed_image: false cannot apply to convert, whose only output is "
            "the converted image (it would publish nothing); use inspect for a report only"
        )
    if operation in (Operation.CONVERT, Operation.INSPECT) and artifacts.keep_intermediates:
        return (
            f"artifacts.keep_intermediates: {operation.value} writes no intermediate files (its "
            "one temporary output is renamed into place or removed), so true cannot apply"
        )
    return None


class Audit(_Strict):
    requested_by: NonEmpty
    ticket: str | None = Field(default=None, max_length=MAX_STRING)
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES)


class ConvertParameters(BaseModel):
    """The parameters convert reads; other keys pass through untouched."""

    model_config = ConfigDict(extra="allow", frozen=True)

    output_format: OutputFormat = OutputFormat.QCOW2
    compress: bool | None = None
    compression_type: CompressionType | None = None

    @model_validator(mode="after")
    def _compress_fits_format(self) -> ConvertParameters:
        if self.compress and self.output_format is OutputFormat.RAW:
            raise ValueError("compress: raw output cannot be compressed")
        if self.compression_type is not None and not self.effective_compress:
            raise ValueError(
                "compression_type: only applies to compressed qcow2 output "
                "(output_format qcow2 with compress true)"
            )
        return self

    @property
    def effective_compress(self) -> bool:
        """v1 compresses by default; raw output never is."""
        if self.output_format is OutputFormat.RAW:
            return False
        return True if self.compress is None else self.compress

    @property
    def effective_compression_type(self) -> CompressionType | None:
        """The compression method of compressed output (zlib by default), else None."""
        if not self.effective_compress:
            return None
        return self.compression_type or CompressionType.ZLIB


class JobSpec(_Strict):
    version: Annotated[str, AfterValidator(_version)] = "1.0"
    job_id: Annotated[str, AfterValidator(_job_id)]
    operation: Operation
    image: Image
    requested_actions: list[NonEmpty] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    capability_requirements: CapabilityRequirements = Field(default_factory=CapabilityRequirements)
    execution_policy: ExecutionPolicy = Field(default_factory=ExecutionPolicy)
    artifacts: Artifacts
    audit: Audit
    parameters: Annotated[dict[str, Any], AfterValidator(_bounded_parameters)] = Field(
        default_factory=dict, max_length=MAX_MAP_ENTRIES
    )
    created_at: datetime | None = None

    @model_validator(mode="after")
    def _artifacts_fit_operation(self) -> JobSpec:
        problem = artifacts_problem(self.operation, self.artifacts)
        if problem is not None:
            raise ValueError(problem)
        return self

    def convert_parameters(self) -> ConvertParameters:
        """The parameters of a convert job, validated."""
        return ConvertParameters.model_validate(self.parameters)

    def fingerprint(self) -> str:
        """A hash of the spec that ignores created_at (for idempotent resubmission)."""
        body = self.model_dump(mode="json", exclude={"created_at"})
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _field_name(loc: tuple[int | str, ...]) -> str:
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "spec"


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a v1 field"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    message = str(error["msg"])
    return message.replace("Input should be", "must be", 1)


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """Turn a pydantic error into ``field: rule`` lines, one per violation."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = _describe(dict(error))
        # Model-level validators name their field in the message ("compress: ...").
        if error["type"] == "value_error" and not loc and ": " in message:
            field, _, message = message.partition(": ")
            loc = (field,)
        lines.append(f"{prefix}{_field_name(loc)}: {message}")
    return lines


def parse_spec(data: Any) -> JobSpec:
    """Validate a v1 job document.

    Raises:
        InvalidArgument: naming every violated field and rule, separated by "; ".
    """
    if not isinstance(data, dict):
        raise InvalidArgument("spec: must be a JSON object")
    problems: list[str] = []
    spec: JobSpec | None = None
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(format_validation_error(exc))
    parameters = data.get("parameters")
    if data.get("operation") == Operation.CONVERT.value and isinstance(parameters, dict):
        try:
            ConvertParameters.model_validate(parameters)
        except ValidationError as exc:
            problems.extend(format_validation_error(exc, prefix="parameters."))
    if problems or spec is None:
        raise InvalidArgument("; ".join(problems))
    return spec
