"""The VirtualHardwareSection of an OVF descriptor as plain records (CIM RASD items).

OVF 1.x writes every device as ``Item`` with ``rasd:`` children; OVF 2.x adds
``StorageItem`` (``sasd:``) and ``EthernetPortItem`` (``epasd:``) with the same child names,
so items are read by local name whatever the namespace.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from migration.model import Firmware, VmNic
from migration.safe_xml import attribute, child_text, children, local_name

ITEM_ELEMENTS = ("Item", "StorageItem", "EthernetPortItem")

# CIM_ResourceAllocationSettingData.ResourceType values met in OVFs.
CPU, MEMORY, IDE, SCSI, ETHERNET, DISK_DRIVE, OTHER_STORAGE = 3, 4, 5, 6, 10, 17, 20
CONTROLLERS = (IDE, SCSI, OTHER_STORAGE)
UNMAPPED_TYPES = {
    1: "other device",
    11: "other network adapter",
    14: "floppy drive",
    15: "CD drive",
    16: "DVD drive",
    21: "serial port",
    22: "parallel port",
    23: "USB controller",
    24: "graphics controller",
    25: "IEEE 1394 controller",
    35: "sound card",
}
_UNITS = {"kilobytes": 2**10, "megabytes": 2**20, "gigabytes": 2**30, "terabytes": 2**40}
_PROGRAMMATIC_UNIT = re.compile(r"byte(?:\*(\d+)\^(\d+))?", re.ASCII)
_MAC_HEX = re.compile(r"[0-9a-f]{12}", re.ASCII)


class Reading:
    """Problems, ignored features and notes gathered while reading one descriptor."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.ignored: list[str] = []
        self.notes: list[str] = []
        self.declared_disks: set[str] = set()  # DiskSection ids, usable or not


@dataclass(frozen=True)
class HardwareItem:
    position: int  # in document order
    instance_id: str
    resource_type: int | None
    subtype: str
    element_name: str
    quantity: str
    units: str
    address: str
    address_on_parent: str
    parent: str
    host_resources: tuple[str, ...]
    connection: str

    def describe(self) -> str:
        what = UNMAPPED_TYPES.get(self.resource_type or 0, f"ResourceType {self.resource_type}")
        name = f" {self.element_name!r}" if self.element_name else ""
        sub = f" ({self.subtype})" if self.subtype else ""
        return f"Item InstanceID={self.instance_id}{name}: {what}{sub}"


def read_items(section: ET.Element) -> list[HardwareItem]:
    """The device items of a VirtualHardwareSection, in document order."""
    items = []
    for position, element in enumerate(e for e in section if local_name(e.tag) in ITEM_ELEMENTS):
        kind = child_text(element, "ResourceType")
        items.append(
            HardwareItem(
                position=position,
                instance_id=child_text(element, "InstanceID"),
                resource_type=int(kind) if kind.isascii() and kind.isdigit() else None,
                subtype=child_text(element, "ResourceSubType"),
                element_name=child_text(element, "ElementName"),
                quantity=child_text(element, "VirtualQuantity"),
                units=child_text(element, "AllocationUnits"),
                address=child_text(element, "Address"),
                address_on_parent=child_text(element, "AddressOnParent"),
                parent=child_text(element, "Parent"),
                host_resources=tuple(
                    (e.text or "").strip() for e in children(element, "HostResource")
                ),
                connection=child_text(element, "Connection"),
            )
        )
    return items


def unit_bytes(units: str) -> int | None:
    """Bytes per unit for ``byte``, ``byte * 2^20``, ``MegaBytes`` and the like (None: unknown)."""
    text = units.replace(" ", "").lower()
    if text in _UNITS:
        return _UNITS[text]
    found = _PROGRAMMATIC_UNIT.fullmatch(text)
    if found is None:
        return None
    if found.group(1) is None:
        return 1
    base, power = int(found.group(1)), int(found.group(2))
    if base not in (2, 10) or power > 60:
        return None
    return int(base**power)


def controller_bus(item: HardwareItem) -> str:
    """The bus name of a storage controller item (ide, scsi, sata, nvme, or its subtype)."""
    if item.resource_type == IDE:
        return "ide"
    if item.resource_type == SCSI:
        return "scsi"
    subtype = item.subtype.lower()
    for bus, marks in (("sata", ("sata", "ahci")), ("nvme", ("nvme",))):
        if any(mark in subtype for mark in marks):
            return bus
    return subtype or "other"


def normalize_mac(text: str) -> str:
    """``00-50-56-AB-CD-EF``, ``0050.56ab.cdef`` or ``005056abcdef`` -> ``00:50:56:ab:cd:ef``;
    "" when ``text`` is not a MAC address."""
    digits = re.sub(r"[:.\-]", "", text.strip().lower())
    if _MAC_HEX.fullmatch(digits) is None:
        return ""
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def nics(items: list[HardwareItem], vbox_macs: list[str], reading: Reading) -> list[VmNic]:
    nics: list[VmNic] = []
    for item in items:
        if item.resource_type != ETHERNET:
            continue
        where = f"Item InstanceID={item.instance_id}"
        mac = normalize_mac(item.address) if item.address else ""
        if item.address and not mac:
            reading.problems.append(f"{where}: Address {item.address!r} is not a MAC address")
        if not item.address and len(vbox_macs) > len(nics):
            mac = vbox_macs[len(nics)]  # VirtualBox keeps MACs in its own section, by slot
        if not mac:
            reading.notes.append(f"{where}: no MAC address given; the target will choose one")
        nics.append(
            VmNic(id=f"nic-{len(nics)}", mac=mac, network=item.connection, model=item.subtype)
        )
    return nics


def cpus_and_memory(items: list[HardwareItem], reading: Reading) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in items:
        where = f"Item InstanceID={item.instance_id}"
        if item.resource_type not in (CPU, MEMORY):
            continue
        if not item.quantity.isascii() or not item.quantity.isdigit() or int(item.quantity) < 1:
            reading.problems.append(
                f"{where}: VirtualQuantity {item.quantity!r} must be a whole number >= 1"
            )
            continue
        if item.resource_type == CPU:
            found["cpus"] = int(item.quantity)
            continue
        per_unit = unit_bytes(item.units) if item.units else 2**20
        if not item.units:
            reading.notes.append(f"{where}: memory without AllocationUnits: taken as MiB")
        if per_unit is None:
            reading.problems.append(f"{where}: AllocationUnits {item.units!r} is not understood")
            continue
        found["memory_mib"] = -(-int(item.quantity) * per_unit // 2**20)  # round up to MiB
    return found


def vmware_config(section: ET.Element, reading: Reading) -> tuple[Firmware | None, bool]:
    firmware: Firmware | None = None
    secure_boot = False
    for element in section:
        kind = local_name(element.tag)
        key, value = attribute(element, "key"), attribute(element, "value")
        if kind == "Config" and key == "firmware":
            firmware = Firmware.UEFI if value.lower() == "efi" else Firmware.BIOS
            if value.lower() not in ("efi", "bios"):
                reading.notes.append(f"vmw:Config firmware={value!r}: taken as BIOS")
        elif kind == "Config" and key == "uefi.secureBoot.enabled":
            secure_boot = value.lower() == "true"
        elif kind in ("Config", "ExtraConfig"):
            reading.ignored.append(f"vmw:{kind} {key}")
        elif kind not in ("Info", "System", "Item", "StorageItem", "EthernetPortItem"):
            reading.ignored.append(f"VirtualHardwareSection/{kind}")
    return firmware, secure_boot


def virtualbox(system: ET.Element, reading: Reading) -> tuple[Firmware | None, list[str]]:
    """Firmware and adapter MACs (by slot) from VirtualBox's vbox:Machine, when present."""
    firmware: Firmware | None = None
    macs: list[str] = []
    for machine in children(system, "Machine"):
        reading.notes.append("vbox:Machine read for firmware and MAC addresses only")
        for hardware in children(machine, "Hardware"):
            for element in children(hardware, "Firmware"):
                firmware = (
                    Firmware.UEFI if "efi" in attribute(element, "type").lower() else Firmware.BIOS
                )
            for network in children(hardware, "Network"):
                adapters = [
                    a for a in children(network, "Adapter") if attribute(a, "enabled") != "false"
                ]
                adapters.sort(key=lambda a: int(s) if (s := attribute(a, "slot")).isdigit() else 0)
                macs = [normalize_mac(attribute(a, "MACAddress")) for a in adapters]
    return firmware, macs
