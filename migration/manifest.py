"""Read a HyperSDK Artifact Manifest v1 into a :class:`~migration.model.VmDescription`.

Pure: the document comes in as bytes or text and the only question asked of the outside
world is ``path_exists(local_path)``. Every rule of the manifest contract is checked and all
broken rules are raised together in one :class:`~migration.model.MigrationProblem`, each as
``"<json path>: <rule>"``. Keys the contract does not know are accepted and listed, by JSON
path, in ``VmDescription.ignored``.

Rules where the contract leaves room (see also :func:`order_disks`):

* ``local_path`` must be absolute. HyperSDK always writes absolute paths, and the manifest is
  copied into a queue directory before h2k reads it, so a relative path has no trustworthy
  base to resolve against.
* The VM name is ``source.vm_name``, else ``source.vm_id``; neither given is a problem.
  HyperSDK's own completion check falls back to the literal ``"vm"``, which is kept apart as
  ``ManifestOptions.hypersdk_result_name`` so the daemon-mode result file still matches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from migration.json_fields import Findings, JsonObject, decode_json
from migration.manifest_options import ManifestOptions, read_options, read_timestamp
from migration.model import (
    DiskRole,
    Firmware,
    MigrationProblem,
    VmDescription,
    VmDisk,
    VmNic,
    VmSource,
)
from migration.vm_name import vm_name_rule

MANIFEST_VERSION = "1.0"
SOURCE_FORMATS = ("vmdk", "qcow2", "raw", "vhd", "vhdx", "vdi")
DISK_TYPES = ("boot", "data", "unknown")
FIRMWARES = ("bios", "uefi", "unknown")
DEFAULT_BOOT_ORDER_HINT = 999
_DISK_ID = r"[a-zA-Z0-9_-]+"
_CHECKSUM = r"sha256:[a-f0-9]{64}"
_MAC = r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"


@dataclass(frozen=True)
class ParsedManifest:
    """The VM the manifest describes and how it asks for it to be migrated."""

    vm: VmDescription
    options: ManifestOptions = field(default_factory=ManifestOptions)


@dataclass(frozen=True)
class _ManifestDisk:
    disk: VmDisk
    position: int
    hint: int | None
    disk_type: str
    bytes: int


def read_manifest(document: bytes | str, *, path_exists: Callable[[str], bool]) -> ParsedManifest:
    """Parse and validate an Artifact Manifest v1.

    Args:
        document: the manifest as read from its file.
        path_exists: answers whether a disk's ``local_path`` exists (``os.path.exists`` in
            production); it is asked once per disk whose path is otherwise valid.

    Returns:
        The VM (disks in boot order, the boot disk first) and the manifest's options.

    Raises:
        MigrationProblem: listing every broken rule, each naming its JSON path.
    """
    try:
        decoded = decode_json(document)
    except ValueError as error:
        raise MigrationProblem([f"document: not a JSON document ({error})"]) from None
    findings = Findings()
    top = JsonObject.of(decoded, "", findings)
    if top is None:
        raise MigrationProblem(findings.problems)
    version = top.raw("manifest_version", required=True)
    if top.has("manifest_version") and version != MANIFEST_VERSION:
        findings.add("manifest_version", f'must be "{MANIFEST_VERSION}"')
    disks = _read_disks(top, path_exists)
    source, vm_name, exported_at = _read_source(top)
    nics = _read_nics(top)
    vm_fields, os_version, notes = _read_vm(top)
    notes += [f"manifest note: {text}" for text in top.strings("notes")]
    options = read_options(top)
    name = _choose_name(vm_name, source.vm_id, findings)
    top.finish()
    if findings.problems:
        raise MigrationProblem(findings.problems)
    ordered, order_notes = order_disks(disks)
    notes += order_notes
    notes += [f"HyperSDK warning ({w.stage}): {w.message}" for w in options.warnings]
    if options.output.format != "qcow2":
        notes.append(
            f"output.format is {options.output.format}: HyperSDK's daemon-mode completion check"
            " looks for .qcow2 whatever the format"
        )
    vm = VmDescription(
        name=name,
        disks=tuple(ordered),
        nics=tuple(nics),
        source=source,
        ignored=tuple(findings.ignored),
        notes=tuple(notes),
        **vm_fields,  # type: ignore[arg-type]
    )
    options = replace(
        options,
        hypersdk_result_name=vm_name or "vm",
        disk_bytes={d.disk.id: d.bytes for d in disks},
        os_version=os_version,
        export_timestamp=exported_at,
    )
    return ParsedManifest(vm=vm, options=options)


def order_disks(disks: list[_ManifestDisk]) -> tuple[list[VmDisk], list[str]]:
    """Put the disks in boot order; return them with notes on anything surprising.

    The disk marked ``boot`` without a ``boot_order_hint`` comes first (HyperSDK omits a hint
    of 0, so that is how its boot disk looks); the rest follow by hint, a missing hint
    counting as 999, ties kept in manifest order. The first disk's role becomes BOOT when the
    manifest did not say; a data disk first, or a boot disk not first, is noted.
    """

    def key(d: _ManifestDisk) -> tuple[int, int, int]:
        if d.disk_type == "boot" and d.hint is None:
            return (0, 0, d.position)
        return (1, DEFAULT_BOOT_ORDER_HINT if d.hint is None else d.hint, d.position)

    ordered = sorted(disks, key=key)
    notes: list[str] = []
    boot_marked = [d for d in disks if d.disk_type == "boot"]
    if len(boot_marked) > 1:
        where = ", ".join(f"disks[{d.position}]" for d in boot_marked)
        notes.append(f"disk_type boot is on {where}; disks[{ordered[0].position}] boots")
    first = ordered[0]
    if first.disk_type == "data":
        notes.append(f"disks[{first.position}] ({first.disk.id}) is a data disk but boots first")
    elif boot_marked and first.disk_type != "boot":
        notes.append(f"the disk marked boot does not boot first: disks[{first.position}] does")
    result = [d.disk for d in ordered]
    if result[0].role is DiskRole.UNKNOWN:
        result[0] = replace(result[0], role=DiskRole.BOOT)
    return result, notes


def _local_path_rule(value: str) -> str:
    if "\0" in value:
        return "must not contain NUL"
    if not value.startswith("/"):
        return f"must be an absolute path, not {value!r}"
    return ""


def _read_disk(
    item: JsonObject, position: int, path_exists: Callable[[str], bool]
) -> _ManifestDisk:
    disk_id = item.string("id", required=True, pattern=_DISK_ID)
    source_format = item.string("source_format", required=True, choices=SOURCE_FORMATS)
    size = item.integer("bytes", required=True, minimum=0)
    local_path = item.string("local_path", required=True, check=_local_path_rule)
    if local_path:
        try:
            exists = path_exists(local_path)
        except (OSError, ValueError) as error:
            item.findings.add(item.at("local_path"), f"cannot check {local_path}: {error}")
        else:
            if not exists:
                item.findings.add(item.at("local_path"), f"{local_path} does not exist")
    checksum = item.string("checksum", pattern=_CHECKSUM)
    hint = item.integer("boot_order_hint", minimum=None)
    disk_type = item.string("disk_type", default="unknown", choices=DISK_TYPES)
    disk = VmDisk(
        id=disk_id,
        path=local_path,
        source_format=source_format,
        role=DiskRole(disk_type),
        label=item.string("label"),
        checksum=checksum,
    )
    item.finish()
    return _ManifestDisk(disk, position, hint, disk_type, size or 0)


def _read_disks(top: JsonObject, path_exists: Callable[[str], bool]) -> list[_ManifestDisk]:
    items = top.array("disks", required=True)
    if items is None:
        return []
    if not items:
        top.findings.add("disks", "must list at least one disk")
    disks: list[_ManifestDisk] = []
    first_with_id: dict[str, int] = {}
    for position, value in enumerate(items):
        item = JsonObject.of(value, f"disks[{position}]", top.findings)
        if item is None:
            continue
        disk = _read_disk(item, position, path_exists)
        if disk.disk.id and disk.disk.id in first_with_id:
            other = first_with_id[disk.disk.id]
            top.findings.add(
                f"disks[{position}].id", f"{disk.disk.id!r} is used by disks[{other}] too"
            )
        first_with_id.setdefault(disk.disk.id, position)
        disks.append(disk)
    return disks


def _read_source(top: JsonObject) -> tuple[VmSource, str, datetime | None]:
    found = top.obj("source")
    if found is None:
        return VmSource(), "", None
    source = VmSource(
        provider=found.string("provider"),
        datacenter=found.string("datacenter"),
        vm_id=found.string("vm_id"),
        export_method=found.string("export_method"),
    )
    vm_name = found.string("vm_name", check=vm_name_rule)
    exported_at = read_timestamp(found, "export_timestamp")
    found.finish()
    return source, vm_name, exported_at


def _choose_name(vm_name: str, vm_id: str, findings: Findings) -> str:
    if vm_name:
        return vm_name
    if any(p.startswith("source.vm_name:") for p in findings.problems):
        return ""
    if not vm_id:
        findings.add(
            "source.vm_name", "is required (neither source.vm_name nor source.vm_id given)"
        )
        return ""
    if rule := vm_name_rule(vm_id):
        findings.add("source.vm_id", f"{rule} (used as the VM name: source.vm_name is missing)")
        return ""
    return vm_id


def _read_vm(top: JsonObject) -> tuple[dict[str, object], str, list[str]]:
    found = top.obj("vm")
    if found is None:
        return {}, "", []
    fields: dict[str, object] = {}
    notes: list[str] = []
    if cpu := found.integer("cpu", minimum=0):
        fields["cpus"] = cpu
    if mem_gb := found.integer("mem_gb", minimum=0, maximum=2**40):
        fields["memory_mib"] = mem_gb * 1024
    firmware = found.string("firmware", default="unknown", choices=FIRMWARES)
    secure_boot = found.boolean("secureboot")
    if firmware == "unknown":
        firmware = "uefi" if secure_boot else "bios"
        reason = "secure boot needs it" if secure_boot else "the usual default"
        notes.append(f"vm.firmware not known: assumed {firmware} ({reason})")
    elif firmware == "bios" and secure_boot:
        found.findings.add("vm.secureboot", "true needs vm.firmware uefi, not bios")
    fields["firmware"] = Firmware(firmware)
    fields["secure_boot"] = secure_boot
    fields["os_hint"] = found.string("os_hint")
    os_version = found.string("os_version")
    found.finish()
    return fields, os_version, notes


def _read_nics(top: JsonObject) -> list[VmNic]:
    nics: list[VmNic] = []
    first_with_mac: dict[str, str] = {}
    for i, item in enumerate(top.objects("nics") or []):
        mac = item.string("mac", pattern=_MAC).lower()
        if mac and mac in first_with_mac:
            item.findings.add(item.at("mac"), f"{mac} is used by {first_with_mac[mac]} too")
        first_with_mac.setdefault(mac, item.path)
        nics.append(
            VmNic(id=item.string("id") or f"nic-{i}", mac=mac, network=item.string("network"))
        )
        item.finish()
    return nics
