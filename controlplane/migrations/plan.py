"""The jobs a migration is made of, stage by stage (pure: a spec in, v1 job specs out).

* disks: every disk is converted to a *staged* output (a hidden name in the output directory,
  :func:`protocol.migration_jobs.staged_name`). When the guest is repaired, the data disks are
  converted first and the boot disk is converted and repaired by one repair job that has the
  data disks' outputs attached, so the guest is whole (``/var`` on the second disk).
* publish: one job checks every output and renames it to its final name, boot disk last.
* cleanup: after a failure or a cancel, one job removes the staged outputs.

All jobs after the first are pinned to the agent that took the first, so they see each
other's files. Job ids: ``<migration id>.disk.<disk id>``, ``.publish``, ``.cleanup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migration.model import VmDescription
from migration.naming import output_names
from migration.wire import vm_from_proto
from protocol.gen.h2k.v1 import migration_pb2
from protocol.migration_jobs import staged_name
from protocol.spec import JobSpec, parse_spec

# Per stage of repair, the v1 requested_actions the pipeline flags turn on.
FSTAB_ACTIONS = {"stabilize-all": ["fstab_uuid"], "noop": [], "": []}
DISK_TIMEOUT_SECONDS = 6 * 3600


@dataclass(frozen=True)
class DiskStep:
    """One disk's job: what it reads and writes."""

    job_id: str
    disk_id: str
    role: str  # "convert" or "repair"
    final_name: str
    staged_name: str
    bytes_total: int


def disk_job_id(migration_id: str, disk_id: str) -> str:
    return f"{migration_id}.disk.{disk_id}"


def publish_job_id(migration_id: str) -> str:
    return f"{migration_id}.publish"


def cleanup_job_id(migration_id: str) -> str:
    return f"{migration_id}.cleanup"


def repair_actions(pipeline: migration_pb2.MigrationPipeline) -> list[str]:
    """The v1 repair actions the pipeline asks for (empty: no repair)."""
    if not pipeline.repair:
        return []
    actions = list(FSTAB_ACTIONS[pipeline.fstab_mode])
    if pipeline.update_grub:
        actions.append("grub_root_uuid")
    if pipeline.regen_initramfs:
        actions.append("virtio_initramfs")
    if pipeline.remove_vmware_tools:
        actions.append("remove_vmware_tools")
    return actions


def disk_steps(spec: migration_pb2.MigrationSpec) -> list[DiskStep]:
    """Every disk job in the order they start: data disks first, the boot disk last."""
    vm = vm_from_proto(spec.vm)
    names = output_names(vm, spec.output_format)
    repaired = bool(repair_actions(spec.pipeline))
    steps = []
    for index, (disk, final) in enumerate(zip(spec.vm.disks, names.disks, strict=True)):
        boot = index == 0
        total = disk.capacity_bytes or disk.file_bytes or disk.size
        steps.append(
            DiskStep(
                job_id=disk_job_id(spec.migration_id, disk.id),
                disk_id=disk.id,
                role="repair" if boot and repaired else "convert",
                final_name=final,
                staged_name=staged_name(spec.migration_id, final),
                bytes_total=total,
            )
        )
    if spec.dry_run:
        # A dry run repairs (read-only) the boot disk alone and writes no disk.
        return [steps[0]] if repaired else []
    return [*steps[1:], steps[0]]


def _base(spec: migration_pb2.MigrationSpec, job_id: str, operation: str) -> dict[str, Any]:
    return {
        "version": "1.0",
        "job_id": job_id,
        "operation": operation,
        "artifacts": {"output_path": spec.output_directory},
        "audit": {
            "requested_by": spec.audit.requested_by or "anonymous",
            "tags": {"h2k.migration_id": spec.migration_id},
        },
        "execution_policy": {
            "retry_count": 1,
            "idempotent": True,
            "timeout_seconds": DISK_TIMEOUT_SECONDS,
        },
    }


def disk_job(
    spec: migration_pb2.MigrationSpec, step: DiskStep, pinned_agent: str | None
) -> JobSpec:
    """The v1 job of one disk (convert, or the boot disk's repair)."""
    disk = next(d for d in spec.vm.disks if d.id == step.disk_id)
    operation = "offline_fix" if step.role == "repair" else "convert"
    document = _base(spec, step.job_id, operation)
    document["image"] = {"path": disk.path, "format": disk.source_format}
    if disk.checksum:
        # The exporter's digest (a manifest's checksum, an OVA's .mf line) of the disk's bytes.
        document["image"]["checksum"] = disk.checksum
    if disk.file_bytes:
        # The exporter's size of the disk's file (a manifest's bytes): the agent checks it,
        # the only proof a raw disk was copied whole.
        document["image"]["size_bytes"] = disk.file_bytes
    migration: dict[str, Any] = {
        "migration_id": spec.migration_id,
        "disk_id": disk.id,
        "output_name": step.staged_name,
        "source_offset": disk.offset,
    }
    if disk.size:
        migration["source_size"] = disk.size
    if pinned_agent:
        migration["pinned_agent"] = pinned_agent
    parameters: dict[str, Any] = {
        "output_format": spec.output_format,
        "compress": spec.pipeline.compress and spec.output_format == "qcow2",
        "migration": migration,
    }
    if step.role == "repair":
        document["requested_actions"] = repair_actions(spec.pipeline)
        if spec.dry_run:
            parameters["dry_run"] = True
        if spec.pipeline.collect_guest_info:
            parameters["guest_info"] = True
        if spec.pipeline.boot_check and not spec.dry_run:
            # The boot disk's repair boots the VM's repaired disks (its own output and the
            # data disks it attaches) once before the migration publishes anything.
            parameters["boot_check"] = True
        others = [s for s in disk_steps(spec) if s.disk_id != disk.id]
        migration["attach_outputs"] = [
            {
                "disk_id": s.disk_id,
                "path": f"{spec.output_directory.rstrip('/')}/{s.staged_name}",
                "format": spec.output_format,
            }
            for s in others
        ]
    else:
        migration["verify_content"] = spec.pipeline.validate
    document["parameters"] = parameters
    return parse_spec(document)


def published_files(spec: migration_pb2.MigrationSpec) -> list[dict[str, Any]]:
    """Staged -> final, in rename order: data disks, definitions, report, boot disk last."""
    vm = vm_from_proto(spec.vm)
    names = output_names(vm, spec.output_format)
    mid = spec.migration_id

    def entry(final: str, kind: str, fmt: str | None = None) -> dict[str, Any]:
        item: dict[str, Any] = {"staged": staged_name(mid, final), "final": final, "kind": kind}
        if fmt is not None:
            item["format"] = fmt
        return item

    files = [entry(name, "disk", spec.output_format) for name in names.disks[1:]]
    files += [entry(names.domain_xml, "definition"), entry(names.kubevirt_yaml, "definition")]
    files.append(entry(names.report_json, "report"))
    files.append(entry(names.disks[0], "disk", spec.output_format))
    return files


def publish_job(
    spec: migration_pb2.MigrationSpec, documents: dict[str, str], pinned_agent: str | None
) -> JobSpec:
    """The job that puts every output at its final name (``documents``: final -> content)."""
    mid = spec.migration_id
    files = published_files(spec)
    boot = files[-1]
    document = _base(spec, publish_job_id(mid), "migration_publish")
    document["image"] = {"path": f"{spec.output_directory.rstrip('/')}/{boot['staged']}"}
    migration: dict[str, Any] = {
        "migration_id": mid,
        "files": files,
        "documents": {staged_name(mid, final): text for final, text in documents.items()},
    }
    if pinned_agent:
        migration["pinned_agent"] = pinned_agent
    document["parameters"] = {"migration": migration}
    return parse_spec(document)


def cleanup_job(spec: migration_pb2.MigrationSpec, pinned_agent: str | None) -> JobSpec:
    """The job that removes every staged output of a failed or cancelled migration."""
    mid = spec.migration_id
    files = published_files(spec)
    document = _base(spec, cleanup_job_id(mid), "migration_cleanup")
    document["image"] = {"path": f"{spec.output_directory.rstrip('/')}/{files[-1]['staged']}"}
    migration: dict[str, Any] = {"migration_id": mid, "staged": [f["staged"] for f in files]}
    if pinned_agent:
        migration["pinned_agent"] = pinned_agent
    document["parameters"] = {"migration": migration}
    return parse_spec(document)


def final_paths(spec: migration_pb2.MigrationSpec) -> list[str]:
    """The final path of every output, in publish order."""
    base = spec.output_directory.rstrip("/")
    return [f"{base}/{f['final']}" for f in published_files(spec)]


def vm_of(spec: migration_pb2.MigrationSpec) -> VmDescription:
    return vm_from_proto(spec.vm)
