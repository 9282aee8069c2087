"""The libvirt domain XML of a migrated VM: model in, document out, nothing touched.

Shape (checked against libvirt 9.0, Debian 12's): an ``hvm`` x86_64 guest on the ``q35``
machine; UEFI through firmware autoselection (``<os firmware='efi'>`` with ``secure-boot`` and
``enrolled-keys`` features, so libvirt picks the OVMF build and makes the NVRAM file; secure boot
also sets ``<loader secure='yes'/>`` and SMM), or explicit OVMF paths when given; every disk as a
virtio disk in boot order, every NIC as virtio with its source MAC, a serial console, a virtio
RNG, a balloon and the guest agent channel.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from migration.model import (
    DiskOutput,
    Firmware,
    MigrationProblem,
    NetworkMap,
    NetworkTarget,
    VmDescription,
    VmNic,
)
from migration.naming import DISK_FORMATS, check_vm_name

DOMAIN_TYPES = ("kvm", "qemu")  # qemu: TCG, no /dev/kvm needed
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class OvmfPaths:
    """Explicit OVMF files, for a host whose libvirt cannot pick firmware by itself."""

    code: str  # the read-only firmware image (OVMF_CODE*.fd)
    vars_template: str  # copied by libvirt into the domain's own NVRAM file


def domain_xml(
    vm: VmDescription,
    outputs: Sequence[DiskOutput],
    networks: NetworkMap,
    *,
    domain_type: str = "kvm",
    emulator: str | None = None,
    ovmf: OvmfPaths | None = None,
    guest_agent_channel: bool = True,
) -> str:
    """The domain XML that runs ``vm`` from its converted disks ``outputs`` on libvirt.

    Args:
        vm: the VM; its name becomes the domain name.
        outputs: one per disk of ``vm`` (matched by ``disk_id``), in any order.
        networks: where each source network of ``vm``'s NICs lands.
        domain_type: ``kvm`` (hardware virtualization) or ``qemu`` (TCG emulation).
        emulator: the QEMU binary, when not the host's default.
        ovmf: explicit UEFI firmware files instead of libvirt's autoselection.
        guest_agent_channel: add the virtio channel the QEMU guest agent talks on.

    Raises:
        MigrationProblem: naming every reason the VM cannot be described (bad name, a disk
            without output, an unmapped network, a bad MAC, ...).
    """
    check_vm_name(vm.name)
    problems = _vm_problems(vm, domain_type) + networks.unmapped(vm)
    ordered, output_problems = _outputs_in_disk_order(vm, outputs)
    problems += output_problems
    for i, nic in enumerate(vm.nics):
        problems += _nic_problems(i, nic, networks.targets.get(nic.network))
    if problems:
        raise MigrationProblem(problems)

    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = vm.name
    ET.SubElement(domain, "memory", unit="MiB").text = str(vm.memory_mib)
    ET.SubElement(domain, "currentMemory", unit="MiB").text = str(vm.memory_mib)
    ET.SubElement(domain, "vcpu", placement="static").text = str(vm.cpus)
    _add_os(domain, vm, ovmf)
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if vm.secure_boot:
        ET.SubElement(features, "smm", state="on")  # OVMF's secure boot needs SMM
    if domain_type == "kvm":
        ET.SubElement(domain, "cpu", mode="host-model")
    # Windows keeps its clock in local time; every other guest in UTC.
    ET.SubElement(domain, "clock", offset="localtime" if _is_windows(vm) else "utc")
    for event, action in (("poweroff", "destroy"), ("reboot", "restart"), ("crash", "destroy")):
        ET.SubElement(domain, f"on_{event}").text = action
    _add_devices(domain, vm, ordered, networks, emulator, guest_agent_channel)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def disk_target(index: int) -> str:
    """The virtio device name of the ``index``-th disk: vda, vdb, ..., vdz, vdaa, ..."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"vd{letters}"


def _vm_problems(vm: VmDescription, domain_type: str) -> list[str]:
    problems = []
    if domain_type not in DOMAIN_TYPES:
        problems.append(f"domain_type: {domain_type!r} is not one of {', '.join(DOMAIN_TYPES)}")
    if vm.cpus < 1:
        problems.append(f"cpus: {vm.cpus} must be at least 1")
    if vm.memory_mib < 1:
        problems.append(f"memory_mib: {vm.memory_mib} must be at least 1")
    if vm.secure_boot and vm.firmware != Firmware.UEFI:
        problems.append("secure_boot: needs firmware uefi")
    if not vm.disks:
        problems.append("disks: the VM has no disk")
    return problems


def _outputs_in_disk_order(
    vm: VmDescription, outputs: Sequence[DiskOutput]
) -> tuple[list[DiskOutput], list[str]]:
    by_disk: dict[str, DiskOutput] = {}
    problems = []
    disk_ids = {disk.id for disk in vm.disks}
    for i, output in enumerate(outputs):
        if output.disk_id not in disk_ids:
            problems.append(f"outputs[{i}].disk_id: {output.disk_id!r} is no disk of the VM")
        elif output.disk_id in by_disk:
            problems.append(f"outputs[{i}].disk_id: {output.disk_id!r} has two outputs")
        if output.format not in DISK_FORMATS:
            problems.append(f"outputs[{i}].format: {output.format!r} is not qcow2 or raw")
        if not output.path or "\x00" in output.path:
            problems.append(f"outputs[{i}].path: {output.path!r} is not a file path")
        by_disk.setdefault(output.disk_id, output)
    ordered = []
    for i, disk in enumerate(vm.disks):
        if disk.id in by_disk:
            ordered.append(by_disk[disk.id])
        else:
            problems.append(f"disks[{i}]: {disk.id!r} has no output")
    return ordered, problems


def _nic_problems(index: int, nic: VmNic, target: NetworkTarget | None) -> list[str]:
    problems = []
    mac = nic.mac.lower()
    if not _MAC.match(mac):
        problems.append(f"nics[{index}].mac: {nic.mac!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    elif int(mac[:2], 16) & 1:
        problems.append(f"nics[{index}].mac: {nic.mac!r} is a multicast address")
    if target is not None and not (target.libvirt_network or target.libvirt_bridge):
        problems.append(
            f"nics[{index}].network: {nic.network!r} maps to neither a libvirt network nor a bridge"
        )
    return problems


def _is_windows(vm: VmDescription) -> bool:
    return "windows" in vm.os_hint.lower()


def _add_os(domain: ET.Element, vm: VmDescription, ovmf: OvmfPaths | None) -> None:
    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type", arch="x86_64", machine="q35").text = "hvm"
    if vm.firmware != Firmware.UEFI:
        return  # SeaBIOS is libvirt's default
    secure = "yes" if vm.secure_boot else "no"
    if ovmf is not None:
        loader = ET.SubElement(os_element, "loader", readonly="yes", secure=secure, type="pflash")
        loader.text = ovmf.code
        ET.SubElement(os_element, "nvram", template=ovmf.vars_template)
        return
    os_element.set("firmware", "efi")
    firmware = ET.SubElement(os_element, "firmware")
    ET.SubElement(firmware, "feature", enabled=secure, name="secure-boot")
    # Secure boot without enrolled keys would accept any bootloader: ask for the enrolled build.
    ET.SubElement(firmware, "feature", enabled=secure, name="enrolled-keys")
    if vm.secure_boot:
        ET.SubElement(os_element, "loader", secure="yes")


def _add_devices(
    domain: ET.Element,
    vm: VmDescription,
    outputs: Sequence[DiskOutput],
    networks: NetworkMap,
    emulator: str | None,
    guest_agent_channel: bool,
) -> None:
    devices = ET.SubElement(domain, "devices")
    if emulator:
        ET.SubElement(devices, "emulator").text = emulator
    for index, output in enumerate(outputs):
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=output.format)
        ET.SubElement(disk, "source", file=output.path)
        ET.SubElement(disk, "target", dev=disk_target(index), bus="virtio")
        ET.SubElement(disk, "boot", order=str(index + 1))
    for nic in vm.nics:
        target = networks.targets[nic.network]
        if target.libvirt_network:
            interface = ET.SubElement(devices, "interface", type="network")
            ET.SubElement(interface, "source", network=target.libvirt_network)
        else:
            interface = ET.SubElement(devices, "interface", type="bridge")
            ET.SubElement(interface, "source", bridge=target.libvirt_bridge)
        ET.SubElement(interface, "mac", address=nic.mac.lower())
        ET.SubElement(interface, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    if guest_agent_channel:
        channel = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    ET.SubElement(devices, "memballoon", model="virtio")
