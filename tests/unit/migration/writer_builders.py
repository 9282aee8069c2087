"""Builders of VMs, outputs and network maps for the writer tests (libvirt, KubeVirt)."""

from __future__ import annotations

from dataclasses import replace

from migration.model import (
    DiskOutput,
    Firmware,
    NetworkMap,
    NetworkTarget,
    VmDescription,
    VmDisk,
    VmNic,
)
from migration.naming import plan_disk_outputs


def two_disk_bios_vm(name: str = "web-01") -> VmDescription:
    """A BIOS VM with a boot and a data disk and two NICs on two networks."""
    return VmDescription(
        name=name,
        disks=(
            VmDisk(id="disk-0", path="/in/web-01.vmdk", source_format="vmdk"),
            VmDisk(id="data", path="/in/web-01_1.vmdk", source_format="vmdk"),
        ),
        cpus=2,
        memory_mib=4096,
        nics=(
            VmNic(id="nic-a", mac="00:50:56:AA:BB:01", network="VM Network"),
            VmNic(id="nic-b", mac="00:50:56:aa:bb:02", network="Backup"),
        ),
    )


def secure_boot_vm(name: str = "win-app") -> VmDescription:
    """A one-disk UEFI VM with secure boot and one NIC."""
    return VmDescription(
        name=name,
        disks=(VmDisk(id="scsi0-0", path="/in/win.vmdk", source_format="vmdk"),),
        cpus=4,
        memory_mib=8192,
        firmware=Firmware.UEFI,
        secure_boot=True,
        nics=(VmNic(id="n0", mac="52:54:00:12:34:56", network="VM Network"),),
        os_hint="windows2019srv_64Guest",
    )


def outputs_for(vm: VmDescription, fmt: str = "qcow2", directory: str = "/out") -> list[DiskOutput]:
    return list(plan_disk_outputs(vm, fmt, directory))


def network_map(overrides: dict[str, NetworkTarget] | None = None) -> NetworkMap:
    """'VM Network' -> libvirt network 'default' / pod; 'Backup' -> bridge br-backup / Multus."""
    targets = {
        "VM Network": NetworkTarget(libvirt_network="default", kubevirt_network="pod"),
        "Backup": NetworkTarget(libvirt_bridge="br-backup", kubevirt_network="infra/backup"),
    }
    targets.update(overrides or {})
    return NetworkMap(targets=targets)


def renamed(vm: VmDescription, name: str) -> VmDescription:
    return replace(vm, name=name)
