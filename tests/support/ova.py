"""Build OVAs the way vSphere exports them: an OVF descriptor in VMware's dialect and
streamOptimized VMDKs, packed with the ``tar`` command, descriptor first."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


@dataclass(frozen=True)
class OvfDisk:
    """One disk of the descriptor: its file in References and its DiskSection entry."""

    file_name: str
    file_bytes: int
    capacity_bytes: int


def stream_optimized(source: Path, target: Path) -> OvfDisk:
    """Convert the VMDK ``source`` to a streamOptimized VMDK at ``target`` (what ovftool
    writes into an OVA)."""
    subprocess.run(
        ["qemu-img", "convert", "-f", "vmdk", "-O", "vmdk", "-o", "subformat=streamOptimized",
         str(source), str(target)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "vmdk", str(target)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    capacity = int(json.loads(info.stdout)["virtual-size"])
    return OvfDisk(target.name, target.stat().st_size, capacity)


def _disk_items(disks: list[OvfDisk]) -> str:
    return "".join(
        f"""
      <Item>
        <rasd:AddressOnParent>{slot}</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk {slot + 1}</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk{slot + 1}</rasd:HostResource>
        <rasd:InstanceID>{10 + slot}</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>"""
        for slot in range(len(disks))
    )


def vmware_ovf(
    name: str,
    disks: list[OvfDisk],
    *,
    mac: str = "00:50:56:AB:CD:EF",
    network: str = "VM Network",
    firmware: str = "bios",
    prolog: str = "",
) -> str:
    """An OVF 1.0 descriptor as ovftool writes one for a vSphere VM: 1 vCPU, 512 MiB, an LSI
    Logic SCSI controller with ``disks`` on slots 0, 1, ..., one VMXNET3 NIC. ``prolog`` goes
    between the XML declaration and the Envelope (a DOCTYPE, for the tests that refuse one)."""
    files = "".join(
        f'\n    <File ovf:href={quoteattr(d.file_name)} ovf:id="file{i + 1}"'
        f' ovf:size="{d.file_bytes}"/>'
        for i, d in enumerate(disks)
    )
    disk_section = "".join(
        f'\n    <Disk ovf:capacity="{d.capacity_bytes}" ovf:capacityAllocationUnits="byte"'
        f' ovf:diskId="vmdisk{i + 1}" ovf:fileRef="file{i + 1}"'
        f' ovf:format="{STREAM_OPTIMIZED}"/>'
        for i, d in enumerate(disks)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>{prolog}
<Envelope vmw:buildId="build-22617221" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>{files}
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>{disk_section}
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name={quoteattr(network)}>
      <Description>The {network} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id={quoteattr(name)}>
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="80" vmw:osType="rhel9_64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>1 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>512MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>512</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>{_disk_items(disks)}
      <Item>
        <rasd:Address>{mac}</rasd:Address>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{network}</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on &quot;{network}&quot;</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>9</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="{firmware}"/>
      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="false"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def pack_ova(target: Path, source: Path, ovf_name: str, descriptor: str, disks: list[str]) -> Path:
    """Write ``descriptor`` as ``source/ovf_name`` and ``tar`` it (first) and the files
    ``disks`` of ``source`` into ``target``."""
    (source / ovf_name).write_text(descriptor)
    subprocess.run(
        ["tar", "-cf", str(target), "--format=ustar", "-C", str(source), ovf_name, *disks],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target
