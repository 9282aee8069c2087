"""The VM a migration moves: what any input format says about it, in one typed model.

Readers (:mod:`migration.manifest`, :mod:`migration.ovf`) return a :class:`VmDescription`;
writers (:mod:`migration.libvirt`, :mod:`migration.kubevirt`) take one plus where its disks
were written (:class:`DiskOutput`) and the network mapping (:class:`NetworkMap`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class DiskRole(StrEnum):
    BOOT = "boot"
    DATA = "data"
    UNKNOWN = "unknown"


class MigrationProblem(ValueError):
    """An input that cannot be migrated; ``problems`` name each JSON path or element and rule."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class VmDisk:
    """One disk of the source VM, in boot order (the first is the boot disk).

    ``path`` is where the image is read: a file, or for a disk inside an OVA the OVA itself
    with ``offset`` the byte where the member starts (``size`` bytes long).
    """

    id: str
    path: str
    source_format: str  # vmdk, qcow2, raw, vhd, vhdx, vdi
    capacity_bytes: int | None = None  # virtual size when the input says it
    role: DiskRole = DiskRole.UNKNOWN
    label: str = ""
    checksum: str = ""  # "sha256:<hex>" when given
    offset: int = 0
    size: int | None = None  # bytes of the member inside an archive (None: the whole file)
    controller: str = ""  # the source's bus (scsi, ide, sata, nvme), for the report only


@dataclass(frozen=True)
class VmNic:
    """One network interface: its MAC address is kept on the target."""

    id: str
    mac: str
    network: str  # the source network's name, mapped by :class:`NetworkMap`
    model: str = ""  # the source's adapter type (vmxnet3, e1000, ...), for the report only


@dataclass(frozen=True)
class VmSource:
    """Where the VM came from (migration limits are per provider and datacenter)."""

    provider: str = ""
    datacenter: str = ""
    vm_id: str = ""
    export_method: str = ""


@dataclass(frozen=True)
class VmDescription:
    """Everything the migration needs to know about the VM."""

    name: str
    disks: tuple[VmDisk, ...]
    cpus: int = 1
    memory_mib: int = 1024
    firmware: Firmware = Firmware.BIOS
    secure_boot: bool = False
    nics: tuple[VmNic, ...] = ()
    source: VmSource = field(default_factory=VmSource)
    os_hint: str = ""
    # What the input said that h2k does not act on, for the report ("ignored: inject_drivers").
    ignored: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def boot_disk(self) -> VmDisk:
        return self.disks[0]


@dataclass(frozen=True)
class DiskOutput:
    """Where one disk of the VM was written on the target."""

    disk_id: str
    path: str  # the final path of the output image
    format: str  # qcow2 or raw
    name: str  # the file name (also the DataVolume/PVC name base on KubeVirt)


@dataclass(frozen=True)
class NetworkTarget:
    """Where one source network lands: a libvirt network or bridge, and a KubeVirt network."""

    libvirt_network: str = ""
    libvirt_bridge: str = ""
    # KubeVirt: "pod" for the pod network, else the name of a Multus NetworkAttachmentDefinition
    # ("namespace/name" or "name").
    kubevirt_network: str = "pod"


@dataclass(frozen=True)
class NetworkMap:
    """Source network name -> target; every network of the VM must be mapped."""

    targets: dict[str, NetworkTarget] = field(default_factory=dict)

    def unmapped(self, vm: VmDescription) -> list[str]:
        """Problems for each NIC whose network has no target (empty: all mapped)."""
        return [
            f"nics[{i}].network: {nic.network!r} has no mapping in network_map"
            for i, nic in enumerate(vm.nics)
            if nic.network not in self.targets
        ]
