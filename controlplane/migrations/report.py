"""``<vm>.report.json`` and the target definitions, made when the disks are done (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controlplane.migrations.plan import disk_steps, repair_actions, vm_of
from controlplane.migrations.records import MigrationRecord
from controlplane.migrations.status import job_error
from controlplane.models import JobRecord
from migration.kubevirt import virtual_machine_yaml
from migration.libvirt import domain_xml
from migration.naming import output_names, plan_disk_outputs
from migration.wire import network_map_from_proto

# Report results are trimmed to this many characters each (the publish job's parameters
# carry the report, and they are bounded).
MAX_RESULT_CHARS = 4000


def option_effects(record: MigrationRecord) -> dict[str, str]:
    """What each pipeline option did, in words."""
    spec = record.spec
    pipeline = spec.pipeline
    actions = repair_actions(pipeline)
    return {
        "pipeline.repair": (
            f"the boot disk was repaired with {', '.join(actions)} (the other disks attached)"
            if actions
            else "no repair: every disk was converted only"
        ),
        "pipeline.fstab_mode": {
            "stabilize-all": "fstab and crypttab device names rewritten to UUID=",
            "noop": "fstab left as it was",
            "": "fstab left as it was",
        }[pipeline.fstab_mode],
        "pipeline.compress": "compressed qcow2 output" if pipeline.compress else "no compression",
        "pipeline.validate": (
            "qemu-img check of every output; converted disks compared with their source"
            if pipeline.validate
            else "outputs checked with qemu-img check only when published"
        ),
        "pipeline.inspect": "each disk's header and qemu-img info were read before writing",
        "pipeline.collect_guest_info": (
            "the repair described the guest as it found it: disks[].guest_info"
            if pipeline.collect_guest_info and actions
            else "no guest description"
        ),
        "pipeline.boot_check": (
            "the repaired guest was booted once on virtio before publishing: the boot disk's "
            "disks[].repair.boot_check"
            if pipeline.boot_check and actions
            else "no boot check"
        ),
        "dry_run": "nothing written; the repair reported what it would change"
        if spec.dry_run
        else "outputs written",
        "output_format": spec.output_format,
    }


def _job_summary(job: JobRecord | None) -> dict[str, Any]:
    if job is None:
        return {"state": "NOT_STARTED"}
    result = json.dumps(job.result or {}, sort_keys=True, default=str)
    summary: dict[str, Any] = {"job_id": job.job_id, "state": job.state.value}
    summary["agent"] = job.assigned_agent or ""
    if job.state.is_terminal and job.state.value != "COMPLETED":
        summary["error"] = job_error(job)
    summary["result"] = (
        json.loads(result) if len(result) <= MAX_RESULT_CHARS else result[:MAX_RESULT_CHARS]
    )
    return summary


def _guest_info(job: JobRecord | None) -> dict[str, Any] | None:
    """The guest the boot disk's repair described (pipeline.collect_guest_info), kept whole:
    the job's result is cut at MAX_RESULT_CHARS."""
    details = ((job.result or {}).get("details") or {}) if job else {}
    guest = details.get("guest_info")
    return guest if isinstance(guest, dict) else None


def build_report(record: MigrationRecord, jobs: Mapping[str, JobRecord]) -> dict[str, Any]:
    spec = record.spec
    vm = vm_of(spec)
    return {
        "migration_id": record.migration_id,
        "vm": {
            "name": vm.name,
            "cpus": vm.cpus,
            "memory_mib": vm.memory_mib,
            "firmware": vm.firmware.value,
            "secure_boot": vm.secure_boot,
            "nics": [{"id": n.id, "mac": n.mac, "network": n.network} for n in vm.nics],
        },
        "input": {"kind": spec.input_kind, "ignored": list(vm.ignored), "notes": list(vm.notes)},
        "options": option_effects(record),
        "disks": [
            {
                "disk_id": step.disk_id,
                "role": step.role,
                "output": step.final_name,
                "job": _job_summary(jobs.get(step.job_id)),
                **(
                    {"guest_info": _guest_info(jobs.get(step.job_id))}
                    if spec.pipeline.collect_guest_info and step.role == "repair"
                    else {}
                ),
            }
            for step in disk_steps(spec)
        ],
    }


def documents(record: MigrationRecord, jobs: Mapping[str, JobRecord]) -> dict[str, str]:
    """Final file name -> content: the libvirt domain, the KubeVirt manifest, the report."""
    spec = record.spec
    vm = vm_of(spec)
    names = output_names(vm, spec.output_format)
    outputs = plan_disk_outputs(vm, spec.output_format, spec.output_directory)
    networks = network_map_from_proto(spec.network_map)
    report = build_report(record, jobs)
    return {
        names.domain_xml: domain_xml(vm, outputs, networks),
        names.kubevirt_yaml: virtual_machine_yaml(vm, outputs, networks),
        names.report_json: json.dumps(report, indent=2, sort_keys=True) + "\n",
    }
