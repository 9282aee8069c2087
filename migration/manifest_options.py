"""The Artifact Manifest v1 settings that steer the pipeline rather than describe the VM.

:func:`read_options` turns ``pipeline``, ``output``, ``options``, ``metadata``, ``warnings``
and ``configuration`` into :class:`ManifestOptions`. Within a stage that is given, a flag left
out takes the value HyperSDK fills in when its pipeline is on (``collect_guest_info``,
``backup``, ``update_grub``, ``regen_initramfs``, ``remove_vmware_tools``, ``compress`` and
``check_image_integrity`` true; ``fstab_mode`` stabilize-all); a stage left out is off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from migration.json_fields import JsonObject

FSTAB_MODES = ("stabilize-all", "bypath-only", "noop")
OUTPUT_FORMATS = ("qcow2", "raw", "vdi")
# RFC 3339 date-time; datetime.fromisoformat alone also takes dates without time or zone.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


@dataclass(frozen=True)
class InspectStage:
    enabled: bool = False
    collect_guest_info: bool = True


@dataclass(frozen=True)
class FixStage:
    enabled: bool = False
    backup: bool = True
    print_fstab: bool = False
    update_grub: bool = True
    regen_initramfs: bool = True
    fstab_mode: str = "stabilize-all"
    remove_vmware_tools: bool = True


@dataclass(frozen=True)
class ConvertStage:
    enabled: bool = False
    compress: bool = True
    compress_level: int | None = None  # 1-9; None: the converter's default


@dataclass(frozen=True)
class ValidateStage:
    enabled: bool = False
    check_image_integrity: bool = True
    # h2k's own key (HyperSDK never writes it): boot the repaired guest once before publishing.
    boot_check: bool = False


@dataclass(frozen=True)
class PipelineSettings:
    inspect: InspectStage = field(default_factory=InspectStage)
    fix: FixStage = field(default_factory=FixStage)
    convert: ConvertStage = field(default_factory=ConvertStage)
    validate: ValidateStage = field(default_factory=ValidateStage)


@dataclass(frozen=True)
class OutputSettings:
    directory: str = ""  # "" when the manifest leaves it to h2k
    format: str = "qcow2"
    filename: str = ""


@dataclass(frozen=True)
class ReportSettings:
    enabled: bool = False
    path: str = "report.json"


@dataclass(frozen=True)
class ManifestWarning:
    stage: str
    message: str
    timestamp: datetime | None = None


@dataclass(frozen=True)
class ManifestMetadata:
    hypersdk_version: str = ""
    job_id: str = ""
    created_at: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestOptions:
    """How the manifest asks the VM to be migrated, beyond the VM itself.

    ``pipeline`` is None when the manifest has no ``pipeline`` (h2k then chooses).
    ``hypersdk_result_name`` is the base name HyperSDK's daemon-mode completion check waits
    for (``<output dir>/<name>.qcow2`` or ``.error``): ``source.vm_name``, else ``"vm"``.
    ``disk_bytes`` is each disk's ``bytes`` by disk id, to check against the file found.
    """

    pipeline: PipelineSettings | None = None
    output: OutputSettings = field(default_factory=OutputSettings)
    dry_run: bool = False
    verbose: int = 0
    report: ReportSettings = field(default_factory=ReportSettings)
    metadata: ManifestMetadata = field(default_factory=ManifestMetadata)
    warnings: tuple[ManifestWarning, ...] = ()
    configuration: Mapping[str, object] = field(default_factory=dict)
    hypersdk_result_name: str = "vm"
    disk_bytes: Mapping[str, int] = field(default_factory=dict)
    os_version: str = ""
    export_timestamp: datetime | None = None


def rfc3339_rule(value: str) -> str:
    """The rule ``value`` breaks as an RFC 3339 date-time ("" when fine)."""
    if _RFC3339.fullmatch(value) is None:
        return "must be an RFC 3339 date-time like 2026-11-30T21:14:05Z"
    try:
        datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return "must be an RFC 3339 date-time like 2026-11-30T21:14:05Z"
    return ""


def read_timestamp(obj: JsonObject, key: str, *, required: bool = False) -> datetime | None:
    text = obj.string(key, required=required, check=rfc3339_rule)
    return datetime.fromisoformat(text.replace("z", "Z")) if text else None


def _path_rule(value: str) -> str:
    if "\0" in value:
        return "must not contain NUL"
    return ""


def _absolute_rule(value: str) -> str:
    if not value.startswith("/"):
        return "must be an absolute path"
    return _path_rule(value)


def _filename_rule(value: str) -> str:
    if "/" in value or value in (".", ".."):
        return "must be a file name, without '/'"
    return _path_rule(value)


def _flag(stage: JsonObject, key: str, default: bool) -> bool:
    return stage.boolean(key, default=default)


def _read_pipeline(obj: JsonObject) -> PipelineSettings:
    def stage(name: str) -> JsonObject | None:
        found = obj.obj(name)
        if found is not None:
            found.boolean("enabled", required=True)
        return found

    inspect = InspectStage()
    if (found := stage("inspect")) is not None:
        inspect = InspectStage(
            enabled=found.boolean("enabled"),
            collect_guest_info=_flag(found, "collect_guest_info", True),
        )
        found.finish()
    fix = FixStage()
    if (found := stage("fix")) is not None:
        fix = FixStage(
            enabled=found.boolean("enabled"),
            backup=_flag(found, "backup", True),
            print_fstab=_flag(found, "print_fstab", False),
            update_grub=_flag(found, "update_grub", True),
            regen_initramfs=_flag(found, "regen_initramfs", True),
            fstab_mode=found.string("fstab_mode", default="stabilize-all", choices=FSTAB_MODES),
            remove_vmware_tools=_flag(found, "remove_vmware_tools", True),
        )
        found.finish()
    convert = ConvertStage()
    if (found := stage("convert")) is not None:
        convert = ConvertStage(
            enabled=found.boolean("enabled"),
            compress=_flag(found, "compress", True),
            compress_level=found.integer("compress_level", minimum=1, maximum=9),
        )
        found.finish()
    validate = ValidateStage()
    if (found := stage("validate")) is not None:
        validate = ValidateStage(
            enabled=found.boolean("enabled"),
            check_image_integrity=_flag(found, "check_image_integrity", True),
            boot_check=_flag(found, "boot_check", False),
        )
        if validate.boot_check and not (validate.enabled and fix.enabled):
            # h2k boots only the guest its repair made ready for virtio: asked without the
            # repair (or with validate off) it could not do what it says.
            found.findings.add(
                found.at("boot_check"), "needs pipeline.validate.enabled and pipeline.fix.enabled"
            )
        found.finish()
    obj.finish()
    return PipelineSettings(inspect=inspect, fix=fix, convert=convert, validate=validate)


def _read_output(obj: JsonObject) -> OutputSettings:
    output = OutputSettings(
        directory=obj.string("directory", check=_absolute_rule),
        format=obj.string("format", default="qcow2", choices=OUTPUT_FORMATS),
        filename=obj.string("filename", check=_filename_rule),
    )
    obj.finish()
    return output


def _read_metadata(obj: JsonObject) -> ManifestMetadata:
    tags: dict[str, str] = {}
    if (found := obj.obj("tags")) is not None:
        # A bad value is a problem already, so what it becomes here does not matter.
        tags = {key: found.string(key) for key in found.value}
    metadata = ManifestMetadata(
        hypersdk_version=obj.string("hypersdk_version"),
        job_id=obj.string("job_id"),
        created_at=read_timestamp(obj, "created_at"),
        tags=tags,
    )
    obj.finish()
    return metadata


def _read_warnings(top: JsonObject) -> tuple[ManifestWarning, ...]:
    warnings = []
    for item in top.objects("warnings") or []:
        warnings.append(
            ManifestWarning(
                stage=item.string("stage", required=True),
                message=item.string("message", required=True),
                timestamp=read_timestamp(item, "timestamp"),
            )
        )
        item.finish()
    return tuple(warnings)


def _read_configuration(top: JsonObject) -> dict[str, object]:
    found = top.obj("configuration")
    if found is None:
        return {}
    # Free-form as documented: kept as given for the fix stage, only the keys are known.
    configuration = {k: found.raw(k) for k in ("users", "services", "hostname", "network")}
    found.finish()
    return {k: v for k, v in configuration.items() if v is not None}


def read_options(top: JsonObject) -> ManifestOptions:
    """Read the pipeline-steering parts of the manifest object ``top`` (problems on ``top``)."""
    pipeline_obj = top.obj("pipeline")
    output_obj = top.obj("output")
    metadata_obj = top.obj("metadata")
    dry_run, verbose, report = False, 0, ReportSettings()
    if (options := top.obj("options")) is not None:
        dry_run = options.boolean("dry_run")
        verbose = options.integer("verbose", minimum=0, maximum=3) or 0
        if (found := options.obj("report")) is not None:
            report = ReportSettings(
                enabled=found.boolean("enabled"),
                path=found.string("path", default="report.json", check=_path_rule) or "report.json",
            )
            found.finish()
        options.finish()
    return ManifestOptions(
        pipeline=None if pipeline_obj is None else _read_pipeline(pipeline_obj),
        output=OutputSettings() if output_obj is None else _read_output(output_obj),
        dry_run=dry_run,
        verbose=verbose,
        report=report,
        metadata=ManifestMetadata() if metadata_obj is None else _read_metadata(metadata_obj),
        warnings=_read_warnings(top),
        configuration=_read_configuration(top),
    )
