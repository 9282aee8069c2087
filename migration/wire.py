"""The VM model on the wire: :class:`VmDescription` <-> ``h2k.v1.VmDefinition``, and the
``MigrationSpec`` a client builds from a manifest or an OVF (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping

from migration.manifest import ParsedManifest
from migration.model import (
    DiskRole,
    Firmware,
    MigrationProblem,
    NetworkMap,
    NetworkTarget,
    VmDescription,
    VmDisk,
    VmNic,
    VmSource,
)
from protocol.gen.h2k.v1 import migration_pb2


def vm_to_proto(
    vm: VmDescription, disk_bytes: Mapping[str, int] | None = None
) -> migration_pb2.VmDefinition:
    sizes = disk_bytes or {}
    return migration_pb2.VmDefinition(
        name=vm.name,
        disks=[
            migration_pb2.VmDisk(
                id=d.id,
                path=d.path,
                source_format=d.source_format,
                capacity_bytes=d.capacity_bytes or 0,
                role=d.role.value,
                label=d.label,
                checksum=d.checksum,
                offset=d.offset,
                size=d.size or 0,
                controller=d.controller,
                file_bytes=sizes.get(d.id, 0),
            )
            for d in vm.disks
        ],
        cpus=vm.cpus,
        memory_mib=vm.memory_mib,
        firmware=vm.firmware.value,
        secure_boot=vm.secure_boot,
        nics=[
            migration_pb2.VmNic(id=n.id, mac=n.mac, network=n.network, model=n.model)
            for n in vm.nics
        ],
        provider=vm.source.provider,
        datacenter=vm.source.datacenter,
        vm_id=vm.source.vm_id,
        os_hint=vm.os_hint,
        ignored=list(vm.ignored),
        notes=list(vm.notes),
    )


def vm_from_proto(msg: migration_pb2.VmDefinition) -> VmDescription:
    """The model of a wire VM (values are checked by the caller, see controlplane intake)."""
    return VmDescription(
        name=msg.name,
        disks=tuple(
            VmDisk(
                id=d.id,
                path=d.path,
                source_format=d.source_format,
                capacity_bytes=d.capacity_bytes or None,
                role=DiskRole(d.role)
                if d.role in DiskRole._value2member_map_
                else DiskRole.UNKNOWN,
                label=d.label,
                checksum=d.checksum,
                offset=d.offset,
                size=d.size or None,
                controller=d.controller,
            )
            for d in msg.disks
        ),
        cpus=msg.cpus or 1,
        memory_mib=msg.memory_mib or 1024,
        firmware=Firmware.UEFI if msg.firmware == Firmware.UEFI.value else Firmware.BIOS,
        secure_boot=msg.secure_boot,
        nics=tuple(VmNic(id=n.id, mac=n.mac, network=n.network, model=n.model) for n in msg.nics),
        source=VmSource(provider=msg.provider, datacenter=msg.datacenter, vm_id=msg.vm_id),
        os_hint=msg.os_hint,
        ignored=tuple(msg.ignored),
        notes=tuple(msg.notes),
    )


def network_map_from_proto(targets: Mapping[str, migration_pb2.NetworkTarget]) -> NetworkMap:
    return NetworkMap(
        {
            name: NetworkTarget(
                libvirt_network=t.libvirt_network,
                libvirt_bridge=t.libvirt_bridge,
                kubevirt_network=t.kubevirt_network or "pod",
            )
            for name, t in targets.items()
        }
    )


def pipeline_from_manifest(parsed: ParsedManifest) -> migration_pb2.MigrationPipeline:
    """HyperSDK's pipeline as h2k runs it; no pipeline section: convert and validate only."""
    pipeline = parsed.options.pipeline
    if pipeline is None:
        return migration_pb2.MigrationPipeline(compress=False, validate=True)
    fix = pipeline.fix
    return migration_pb2.MigrationPipeline(
        inspect=pipeline.inspect.enabled,
        repair=fix.enabled,
        fstab_mode=fix.fstab_mode if fix.enabled else "noop",
        update_grub=fix.enabled and fix.update_grub,
        regen_initramfs=fix.enabled and fix.regen_initramfs,
        remove_vmware_tools=fix.enabled and fix.remove_vmware_tools,
        compress=pipeline.convert.enabled and pipeline.convert.compress,
        validate=pipeline.validate.enabled and pipeline.validate.check_image_integrity,
        collect_guest_info=pipeline.inspect.enabled
        and pipeline.inspect.collect_guest_info
        and fix.enabled,
        boot_check=pipeline.validate.enabled and pipeline.validate.boot_check and fix.enabled,
    )


def manifest_notes(parsed: ParsedManifest) -> list[str]:
    """What each manifest setting h2k does not act on as such means here (for the report)."""
    options = parsed.options
    notes = []
    pipeline = options.pipeline
    if pipeline is not None:
        if pipeline.inspect.enabled and pipeline.inspect.collect_guest_info:
            notes.append(
                "pipeline.inspect.collect_guest_info: the repair describes the guest (OS, "
                "kernels and their initramfs drivers, boot loader, firmware, fstab, network "
                "bindings, hypervisor tools) in <vm>.report.json, disks[].guest_info"
                if pipeline.fix.enabled
                else "pipeline.inspect.collect_guest_info: not collected: only the repair "
                "(pipeline.fix) mounts the guest, and it is off"
            )
        if pipeline.fix.enabled and pipeline.fix.backup:
            notes.append(
                "pipeline.fix.backup: nothing to back up, the source disks are never written "
                "(the repair works on the output)"
            )
        if pipeline.fix.enabled and pipeline.fix.print_fstab:
            notes.append("pipeline.fix.print_fstab: the fstab diff is in the report")
        if pipeline.convert.compress_level is not None:
            notes.append(
                f"pipeline.convert.compress_level {pipeline.convert.compress_level}: not used "
                "(qemu-img has no compression level for qcow2; zlib's default is used)"
            )
    if options.verbose:
        notes.append("options.verbose: h2k's logs and events are always complete")
    if options.report.enabled and options.report.path != "report.json":
        notes.append(f"options.report.path {options.report.path}: the report is <vm>.report.json")
    return notes


def check_output_filename(parsed: ParsedManifest, fmt: str) -> None:
    """``output.filename`` other than ``<vm>.<format>`` is refused: HyperSDK waits for
    ``<vm_name>.qcow2`` whatever the manifest says, so another name would never be found.

    Raises:
        MigrationProblem: naming the field and the name h2k writes.
    """
    filename = parsed.options.output.filename
    expected = f"{parsed.vm.name}.{fmt}"
    if filename and filename != expected:
        raise MigrationProblem(
            [
                f"output.filename: {filename!r} is not supported: h2k names the boot disk "
                f"{expected!r} (the name HyperSDK waits for); leave output.filename out"
            ]
        )


def spec_from_manifest(
    parsed: ParsedManifest,
    document: str,
    *,
    migration_id: str,
    output_directory: str = "",
    network_map: Mapping[str, migration_pb2.NetworkTarget] | None = None,
    requested_by: str = "",
) -> migration_pb2.MigrationSpec:
    """The MigrationSpec of a parsed Artifact Manifest v1 (``output_directory`` overrides
    the manifest's ``output.directory``)."""
    options = parsed.options
    check_output_filename(parsed, options.output.format)
    spec = migration_pb2.MigrationSpec(
        migration_id=migration_id,
        vm=vm_to_proto(parsed.vm, options.disk_bytes),
        pipeline=pipeline_from_manifest(parsed),
        output_directory=output_directory or options.output.directory,
        output_format=options.output.format,
        dry_run=options.dry_run,
        input_kind="artifact_manifest",
        input_document=document,
    )
    for name, target in (network_map or {}).items():
        spec.network_map[name].CopyFrom(target)
    spec.vm.notes.extend(manifest_notes(parsed))
    spec.labels.update(dict(options.metadata.tags))
    if requested_by:
        spec.audit.requested_by = requested_by
    return spec
