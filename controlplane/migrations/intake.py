"""A submitted MigrationSpec, checked whole before anything is stored.

Every problem is named by its field and rule ("vm.disks[1].source_format: must be one of
..."); a wave is refused whole when one spec is bad. What the control plane cannot check
(a disk's file existing on a conversion host) the client checked when it read the manifest,
and the agent checks again before it reads.
"""

from __future__ import annotations

import re

from controlplane.migrations import plan
from migration.kubevirt import virtual_machine_yaml
from migration.libvirt import domain_xml
from migration.model import MigrationProblem, VmDescription
from migration.naming import check_vm_name, plan_disk_outputs
from migration.wire import network_map_from_proto, vm_from_proto
from protocol.errors import InvalidArgument
from protocol.gen.h2k.v1 import migration_pb2
from protocol.migration_jobs import MIGRATION_ID_PATTERN

SOURCE_FORMATS = ("vmdk", "qcow2", "raw", "vhd", "vhdx", "vdi")
OUTPUT_FORMATS = ("qcow2", "raw")
FSTAB_MODES = ("stabilize-all", "noop", "")
DISK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
MAX_DISKS = 26
MAX_INPUT_DOCUMENT = 256 * 1024
MAX_IN_FLIGHT = 1000
MAX_JOB_ID = 128  # the v1 job_id limit (protocol.spec.JOB_ID_PATTERN)


def _disk_problems(spec: migration_pb2.MigrationSpec) -> list[str]:
    problems: list[str] = []
    disks = spec.vm.disks
    if not disks:
        problems.append("vm.disks: at least one disk is required")
    if len(disks) > MAX_DISKS:
        problems.append(f"vm.disks: at most {MAX_DISKS} disks")
    seen: dict[str, int] = {}
    for i, disk in enumerate(disks):
        where = f"vm.disks[{i}]"
        job_id = plan.disk_job_id(spec.migration_id, disk.id)
        if len(job_id) > MAX_JOB_ID:
            problems.append(
                f"{where}.id: the job id {job_id[:40]}... would be {len(job_id)} characters "
                f"(at most {MAX_JOB_ID}): use a shorter migration_id or disk id"
            )
        if not DISK_ID.match(disk.id):
            problems.append(f"{where}.id: must be 1-64 letters, digits, '_' or '-'")
        elif disk.id in seen:
            problems.append(f"{where}.id: {disk.id!r} is used by vm.disks[{seen[disk.id]}] too")
        seen.setdefault(disk.id, i)
        if disk.source_format not in SOURCE_FORMATS:
            problems.append(f"{where}.source_format: must be one of {', '.join(SOURCE_FORMATS)}")
        if not disk.path.startswith("/") or "\x00" in disk.path:
            problems.append(f"{where}.path: must be an absolute path")
        if disk.offset < 0 or disk.size < 0:
            problems.append(f"{where}.offset: offset and size must not be negative")
    return problems


def _spec_problems(spec: migration_pb2.MigrationSpec) -> list[str]:
    problems: list[str] = []
    if not MIGRATION_ID_PATTERN.match(spec.migration_id):
        problems.append(
            "migration_id: must be 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    try:
        check_vm_name(spec.vm.name)
    except MigrationProblem as exc:
        problems += [f"vm.name: {p}" if not p.startswith("vm") else p for p in exc.problems]
    problems += _disk_problems(spec)
    for i, nic in enumerate(spec.vm.nics):
        if not MAC.match(nic.mac):
            problems.append(f"vm.nics[{i}].mac: must be six hex pairs separated by ':'")
    if spec.vm.firmware not in ("bios", "uefi", ""):
        problems.append("vm.firmware: must be bios or uefi")
    if spec.vm.secure_boot and spec.vm.firmware != "uefi":
        problems.append("vm.secure_boot: needs firmware uefi")
    if not spec.output_directory.startswith("/"):
        problems.append("output_directory: must be an absolute path")
    if spec.output_format not in (*OUTPUT_FORMATS, ""):
        problems.append(
            f"output_format: {spec.output_format!r} is not written by h2k (qcow2 or raw)"
        )
    if spec.pipeline.fstab_mode not in FSTAB_MODES:
        problems.append(
            f"pipeline.fstab_mode: {spec.pipeline.fstab_mode!r} is not supported "
            "(stabilize-all or noop; bypath-only is not implemented)"
        )
    if spec.pipeline.compress and spec.output_format == "raw":
        problems.append("pipeline.compress: raw output cannot be compressed")
    if not 0 <= spec.max_in_flight_per_source <= MAX_IN_FLIGHT:
        problems.append(f"max_in_flight_per_source: must be between 0 and {MAX_IN_FLIGHT}")
    if len(spec.input_document.encode()) > MAX_INPUT_DOCUMENT:
        problems.append(f"input_document: must be at most {MAX_INPUT_DOCUMENT} bytes")
    return problems


def _definition_problems(spec: migration_pb2.MigrationSpec, vm: VmDescription) -> list[str]:
    """Generate the target definitions now: an unmapped network fails before any disk work."""
    networks = network_map_from_proto(spec.network_map)
    fmt = spec.output_format or "qcow2"
    try:
        outputs = plan_disk_outputs(vm, fmt, spec.output_directory)
        domain_xml(vm, outputs, networks)
        virtual_machine_yaml(vm, outputs, networks)
    except MigrationProblem as exc:
        return list(exc.problems)
    return []


def checked_spec(
    spec: migration_pb2.MigrationSpec, requested_by: str, prefix: str = ""
) -> migration_pb2.MigrationSpec:
    """The spec with its defaults filled in (output format, source key, requester).

    Raises:
        InvalidArgument: naming every problem, each prefixed with ``prefix``.
    """
    problems = _spec_problems(spec)
    if not problems:
        problems = _definition_problems(spec, vm_from_proto(spec.vm))
    if problems:
        raise InvalidArgument("; ".join(prefix + p for p in problems))
    done = migration_pb2.MigrationSpec()
    done.CopyFrom(spec)
    done.output_format = spec.output_format or "qcow2"
    if not spec.vm.firmware:
        done.vm.firmware = "bios"
    if not done.source_key:
        done.source_key = f"{spec.vm.provider or 'unknown'}/{spec.vm.datacenter or 'unknown'}"
    claimed = spec.audit.requested_by
    done.audit.requested_by = requested_by or claimed or "anonymous"
    if claimed and claimed != done.audit.requested_by:
        done.audit.tags["h2k.claimed_requested_by"] = claimed
    return done
