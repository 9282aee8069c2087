"""Read a DMTF OVF 1.x/2.x descriptor (VMware ovftool/vSphere, VirtualBox) into a VmDescription.

Pure: the descriptor comes in as bytes and ``files`` says where each file it references can
be read (a file on disk, or a member inside an OVA). The XML is parsed by
:mod:`migration.safe_xml`, which refuses DTDs and entities. Elements and attributes are matched
by local name, so OVF 1.x and 2.x namespaces (and their rasd/vssd/sasd/epasd schemas) read alike.

Disk order: storage controllers in the order they appear in the VirtualHardwareSection, and on
each controller by ``AddressOnParent`` (missing ones after, in document order); a disk whose
``Parent`` is no known controller follows all of those, and a DiskSection disk no drive
points at comes last. The first disk is the boot disk. This is a rule, not the source BIOS's
choice: when disks sit on more than one controller a note says to check it.

What is met but not mapped (CD/DVD, floppy, USB, sound, serial, graphics, vApp
ProductSection, EULAs, other vmw:Config keys, ...) is listed in ``ignored``; a
VirtualSystemCollection (a multi-VM vApp) is refused.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, replace

from migration.model import (
    DiskRole,
    Firmware,
    MigrationProblem,
    VmDescription,
    VmDisk,
    VmSource,
)
from migration.ovf_hardware import (
    CONTROLLERS,
    CPU,
    DISK_DRIVE,
    ETHERNET,
    MEMORY,
    HardwareItem,
    Reading,
    controller_bus,
    cpus_and_memory,
    nics,
    read_items,
    unit_bytes,
    virtualbox,
    vmware_config,
)
from migration.safe_xml import UnsafeXml, attribute, child_text, children, local_name, parse_xml
from migration.vm_name import vm_name_rule

_KNOWN_ENVELOPE = {"References", "DiskSection", "NetworkSection", "VirtualSystem"}
_KNOWN_SYSTEM = {"Info", "Name", "VirtualHardwareSection", "OperatingSystemSection", "Machine"}
_FORMAT_MARKS = (("vmdk", "vmdk"), ("vhdx", "vhdx"), ("137171", "vhd"), ("vhd", "vhd"),
                 ("qcow", "qcow2"), ("vdi", "vdi"), ("raw", "raw"))  # fmt: skip


@dataclass(frozen=True)
class FileInfo:
    """Where the bytes of one referenced file are: ``path``, from ``offset``, ``size`` long
    (for an OVA: the OVA itself and the member's data; for a directory: the file)."""

    path: str
    offset: int = 0
    size: int | None = None


@dataclass(frozen=True)
class _Reference:
    file_id: str
    href: str
    size: int | None


def _root(descriptor: bytes) -> ET.Element:
    try:
        root = parse_xml(descriptor)
    except UnsafeXml as error:
        raise MigrationProblem([f"descriptor: {error}"]) from None
    if local_name(root.tag) != "Envelope":
        raise MigrationProblem(
            [f"descriptor: root element is {local_name(root.tag)}, not Envelope"]
        )
    return root


def _references(root: ET.Element, reading: Reading) -> dict[str, _Reference]:
    found: dict[str, _Reference] = {}
    for section in children(root, "References"):
        for element in children(section, "File"):
            file_id, href = attribute(element, "id"), attribute(element, "href")
            where = f"References/File[ovf:id={file_id}]"
            size_text = attribute(element, "size")
            size = int(size_text) if size_text.isascii() and size_text.isdigit() else None
            if size_text and size is None:
                reading.problems.append(f"{where}: ovf:size {size_text!r} is not a byte count")
            if attribute(element, "compression"):
                reading.problems.append(
                    f"{where}: ovf:compression {attribute(element, 'compression')!r} is not"
                    " supported (the disk cannot be read in place)"
                )
            if attribute(element, "chunkSize"):
                reading.problems.append(f"{where}: ovf:chunkSize (a chunked file) is not supported")
            if "://" in href or href.startswith("/") or ".." in href.split("/") or not href:
                reading.problems.append(
                    f"{where}: ovf:href {href!r} must name a file beside the descriptor"
                )
            if file_id in found:
                reading.problems.append(f"{where}: ovf:id is used by another File too")
            found[file_id] = _Reference(file_id, href, size)
    return found


def ovf_references(descriptor: bytes) -> dict[str, str]:
    """File id -> href of every file the descriptor references (to look them up before
    :func:`read_ovf`). Raises MigrationProblem when the descriptor cannot be parsed."""
    return {r.file_id: r.href for r in _references(_root(descriptor), Reading()).values()}


def _capacity(element: ET.Element, where: str, reading: Reading) -> int | None:
    text = attribute(element, "capacity")
    if not text:
        return None
    units = attribute(element, "capacityAllocationUnits") or "byte"
    per_unit = unit_bytes(units)
    if not text.isascii() or not text.isdigit():
        reading.problems.append(
            f"{where}: ovf:capacity {text!r} is not a number (properties are not supported)"
        )
        return None
    if per_unit is None:
        reading.problems.append(f"{where}: ovf:capacityAllocationUnits {units!r} is not understood")
        return None
    return int(text) * per_unit


def _source_format(format_url: str, href: str, where: str, reading: Reading) -> str:
    for text in (format_url.lower(), href.lower().rsplit(".", 1)[-1]):
        for mark, name in _FORMAT_MARKS:
            if mark in text:
                return name
    reading.problems.append(f"{where}: disk format {format_url!r} is not known")
    return ""


def _file_disk(
    disk_id: str, ref: _Reference, files: Mapping[str, FileInfo], where: str, reading: Reading
) -> tuple[str, FileInfo] | None:
    info = files.get(ref.href)
    if info is None:
        return None  # reported once per File by _check_files
    if ref.size is not None and info.size is not None and ref.size != info.size:
        reading.problems.append(
            f"{where}: File {ref.file_id} ({ref.href}) is {info.size} bytes,"
            f" ovf:size says {ref.size}"
        )
    return disk_id, info


def _check_files(
    refs: Mapping[str, _Reference], files: Mapping[str, FileInfo], reading: Reading
) -> None:
    for ref in refs.values():
        if ref.href and ref.href not in files:
            reading.problems.append(
                f"References/File[ovf:id={ref.file_id}]: ovf:href {ref.href!r}"
                " is not among the files given"
            )


def _disks(
    root: ET.Element,
    refs: Mapping[str, _Reference],
    files: Mapping[str, FileInfo],
    reading: Reading,
) -> dict[str, VmDisk]:
    """DiskSection disks by diskId (path, format and capacity; order and role come later)."""
    disks: dict[str, VmDisk] = {}
    for section in children(root, "DiskSection"):
        for element in children(section, "Disk"):
            disk_id, file_ref = attribute(element, "diskId"), attribute(element, "fileRef")
            where = f"DiskSection/Disk[ovf:diskId={disk_id}]"
            reading.declared_disks.add(disk_id)
            capacity = _capacity(element, where, reading)
            if not file_ref:
                reading.problems.append(
                    f"{where}: has no ovf:fileRef (an empty disk): not supported"
                )
                continue
            ref = refs.get(file_ref)
            if ref is None:
                reading.problems.append(f"{where}: ovf:fileRef {file_ref!r} is not in References")
                continue
            fmt = _source_format(attribute(element, "format"), ref.href, where, reading)
            located = _file_disk(disk_id, ref, files, where, reading)
            if located is None:
                continue
            info = located[1]
            disks[disk_id] = VmDisk(
                id=disk_id, path=info.path, source_format=fmt, capacity_bytes=capacity,
                offset=info.offset, size=info.size if info.size is not None else ref.size,
            )  # fmt: skip
    return disks


def _host_disk(item: HardwareItem) -> str:
    """``ovf:/disk/vmdisk1`` -> ``vmdisk1`` ("" when the drive is empty)."""
    for resource in item.host_resources:
        text = resource.removeprefix("ovf:")
        if text.startswith("/disk/"):
            return text[len("/disk/") :]
    return ""


def _ordered_disks(
    items: list[HardwareItem], disks: dict[str, VmDisk], reading: Reading
) -> list[VmDisk]:
    controllers = {i.instance_id: i for i in items if i.resource_type in CONTROLLERS}
    ranked: list[tuple[tuple[int, int, int], VmDisk]] = []
    attached: set[str] = set()
    for item in items:
        if item.resource_type != DISK_DRIVE:
            continue
        disk_id = _host_disk(item)
        if not disk_id:
            reading.ignored.append(f"Item InstanceID={item.instance_id}: disk drive without a disk")
            continue
        if disk_id in attached:
            reading.problems.append(
                f"Item InstanceID={item.instance_id}: disk {disk_id} is attached twice"
            )
            continue
        attached.add(disk_id)
        if disk_id not in disks:
            if disk_id not in reading.declared_disks:
                reading.problems.append(
                    f"Item InstanceID={item.instance_id}: HostResource ovf:/disk/{disk_id}"
                    " is not in DiskSection"
                )
            continue
        controller = controllers.get(item.parent)
        slot = item.address_on_parent
        slot_rank = int(slot) if slot.isascii() and slot.isdigit() else 1 << 30
        if controller is None:
            reading.notes.append(f"disk {disk_id}: Parent {item.parent!r} is no storage controller")
            rank = (1 << 30, slot_rank, item.position)
            bus = ""
        else:
            rank = (controller.position, slot_rank, item.position)
            bus = controller_bus(controller)
        label = item.element_name
        ranked.append((rank, replace(disks[disk_id], controller=bus, label=label)))
    for position, (disk_id, disk) in enumerate(disks.items()):
        if disk_id not in attached:
            reading.notes.append(
                f"disk {disk_id} is attached to no drive: migrated after the others"
            )
            ranked.append(((1 << 31, 0, position), disk))
    ranked.sort(key=lambda pair: pair[0])
    if len({rank[0] for rank, _ in ranked}) > 1:
        reading.notes.append(
            "disks are on more than one controller: the boot disk was chosen by controller"
            " order; check it"
        )
    ordered = [disk for _, disk in ranked]
    return [
        replace(disk, role=DiskRole.BOOT if i == 0 else DiskRole.DATA)
        for i, disk in enumerate(ordered)
    ]


def _system(root: ET.Element, reading: Reading) -> ET.Element:
    if children(root, "VirtualSystemCollection"):
        raise MigrationProblem(
            [
                "Envelope/VirtualSystemCollection: a multi-VM vApp is not supported;"
                " export each VM on its own"
            ]
        )
    systems = children(root, "VirtualSystem")
    if len(systems) != 1:
        raise MigrationProblem(
            [f"Envelope: must have exactly one VirtualSystem, not {len(systems)}"]
        )
    for element in root:
        if local_name(element.tag) not in _KNOWN_ENVELOPE and isinstance(element.tag, str):
            reading.ignored.append(f"Envelope/{local_name(element.tag)}")
    for element in systems[0]:
        if local_name(element.tag) not in _KNOWN_SYSTEM and isinstance(element.tag, str):
            reading.ignored.append(f"VirtualSystem/{local_name(element.tag)}")
    return systems[0]


def _os_hint(system: ET.Element) -> str:
    for section in children(system, "OperatingSystemSection"):
        return (
            attribute(section, "osType")
            or child_text(section, "OSType")
            or child_text(section, "Description")
        )
    return ""


def read_ovf(descriptor: bytes, *, files: Mapping[str, FileInfo]) -> VmDescription:
    """Parse an OVF descriptor.

    Args:
        descriptor: the .ovf file's bytes.
        files: every file the caller can supply, by the href the descriptor uses for it.

    Returns:
        The VM, its disks in boot order (see the module docstring) with path/offset/size
        taken from ``files``.

    Raises:
        MigrationProblem: every problem found: unsafe or malformed XML, a referenced file
        that is not in ``files``, unsupported disks or units, a multi-VM collection, ...
    """
    root = _root(descriptor)
    reading = Reading()
    system = _system(root, reading)
    refs = _references(root, reading)
    _check_files(refs, files, reading)
    disks = _disks(root, refs, files, reading)
    sections = children(system, "VirtualHardwareSection")
    if not sections:
        raise MigrationProblem([*reading.problems, "VirtualSystem: has no VirtualHardwareSection"])
    for extra in sections[1:]:
        reading.ignored.append(
            f"VirtualHardwareSection (another one, ovf:transport={attribute(extra, 'transport')!r})"
        )
    items = read_items(sections[0])
    vmw_firmware, secure_boot = vmware_config(sections[0], reading)
    vbox_firmware, vbox_macs = virtualbox(system, reading)
    ordered = _ordered_disks(items, disks, reading)
    found_nics = nics(items, vbox_macs, reading)
    sizing = cpus_and_memory(items, reading)
    reading.ignored.extend(
        item.describe() for item in items
        if item.resource_type not in (CPU, MEMORY, ETHERNET, DISK_DRIVE, *CONTROLLERS)
    )  # fmt: skip
    system_id = attribute(system, "id")
    name = child_text(system, "Name") or system_id
    if rule := vm_name_rule(name):
        reading.problems.append(f"VirtualSystem/Name: {rule}")
    if not ordered and not reading.problems:
        reading.problems.append("DiskSection: the VM has no disk")
    if reading.problems:
        raise MigrationProblem(reading.problems)
    system_type = " ".join(
        child_text(s, "VirtualSystemType") for s in children(sections[0], "System")
    ).strip()
    if system_type:
        reading.notes.append(f"VirtualSystemType {system_type}")
    provider = (
        "vmware" if "vmx-" in system_type else "virtualbox" if "virtualbox" in system_type else ""
    )
    firmware = vmw_firmware or vbox_firmware or Firmware.BIOS
    if secure_boot and firmware is not Firmware.UEFI:
        reading.notes.append("uefi.secureBoot.enabled without EFI firmware: secure boot left off")
        secure_boot = False
    return VmDescription(
        name=name,
        disks=tuple(ordered),
        firmware=firmware,
        secure_boot=secure_boot,
        nics=tuple(found_nics),
        source=VmSource(provider=provider, vm_id=system_id, export_method="ovf"),
        os_hint=_os_hint(system),
        ignored=tuple(reading.ignored),
        notes=tuple(reading.notes),
        **sizing,
    )
