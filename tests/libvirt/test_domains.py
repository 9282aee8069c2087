"""The generated domain XML on a real libvirt: it validates, defines and starts (under TCG)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from migration.libvirt import OvmfPaths, domain_xml
from migration.model import NetworkMap, NetworkTarget, VmDescription
from migration.naming import output_names, plan_disk_outputs
from tests.libvirt.conftest import TEST_NETWORK, Libvirtd, wait_until
from tests.unit.migration.writer_builders import secure_boot_vm, two_disk_bios_vm

RUNNING_DEADLINE_S = 30.0
NETWORKS = NetworkMap(
    targets={
        "VM Network": NetworkTarget(libvirt_network=TEST_NETWORK),
        "Backup": NetworkTarget(libvirt_network=TEST_NETWORK),
    }
)


def small(vm: VmDescription) -> VmDescription:
    """The same VM with what two shared cores can boot a few of under TCG."""
    return replace(vm, cpus=1, memory_mib=128)


CASES = {
    "bios-two-disks": small(two_disk_bios_vm(name="h2k-bios")),
    "uefi": small(replace(secure_boot_vm(name="h2k-uefi"), secure_boot=False)),
    "uefi-secure-boot": small(secure_boot_vm(name="h2k-secure-boot")),
    "odd-name": small(two_disk_bios_vm(name='h2k web & <db>\'s "vm"')),
}


def write_domain(
    vm: VmDescription, directory: Path, fmt: str, ovmf: OvmfPaths | None = None
) -> Path:
    """Blank images for the VM's disks, and its domain XML beside them."""
    outputs = plan_disk_outputs(vm, fmt, str(directory))
    for output in outputs:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", output.format, output.path, "16M"], check=True
        )
    path = directory / output_names(vm, fmt).domain_xml
    path.write_text(domain_xml(vm, outputs, NETWORKS, domain_type="qemu", ovmf=ovmf))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_domain_validates_defines_and_starts(libvirtd: Libvirtd, tmp_path: Path, case: str) -> None:
    vm = CASES[case]
    fmt = "raw" if case == "uefi" else "qcow2"
    xml_path = write_domain(vm, tmp_path, fmt)
    validated = subprocess.run(
        ["virt-xml-validate", str(xml_path), "domain"], capture_output=True, text=True
    )
    assert validated.returncode == 0, validated.stderr + validated.stdout

    libvirtd.virsh("define", str(xml_path))
    try:
        libvirtd.virsh("start", vm.name)
        wait_until(
            lambda: libvirtd.virsh("domstate", vm.name).strip() == "running",
            RUNNING_DEADLINE_S,
            f"domain {vm.name!r} running",
        )
        live = ET.fromstring(libvirtd.virsh("dumpxml", vm.name))
        assert live.findtext("name") == vm.name
        macs = [i.get("address") for i in live.findall("devices/interface/mac")]
        assert macs == [nic.mac.lower() for nic in vm.nics]
        sources = [s.get("file") for s in live.findall("devices/disk/source")]
        assert sources == [o.path for o in plan_disk_outputs(vm, fmt, str(tmp_path))]
        check_firmware(live, vm)
    finally:
        if vm.name in libvirtd.virsh("list", "--name").splitlines():  # names may hold spaces
            libvirtd.virsh("destroy", vm.name)
        libvirtd.virsh("undefine", "--nvram", vm.name)
    # Gone, not left running as a transient domain.
    assert vm.name not in libvirtd.virsh("list", "--all", "--name").splitlines()


def check_firmware(live: ET.Element, vm: VmDescription) -> None:
    """What libvirt's firmware autoselection picked for the running domain."""
    loader = live.find("os/loader")
    if vm.firmware == "bios":
        assert loader is None or "OVMF" not in (loader.text or "")
        return
    assert loader is not None and loader.text is not None
    assert loader.text.startswith("/usr/share/OVMF/"), loader.text
    nvram = live.find("os/nvram")
    assert nvram is not None and nvram.text == f"/var/lib/libvirt/qemu/nvram/{vm.name}_VARS.fd"
    if vm.secure_boot:
        # The build with Microsoft's keys enrolled, so secure boot is enforced from the start.
        assert loader.get("secure") == "yes"
        assert loader.text.endswith(".ms.fd") and (nvram.get("template") or "").endswith(".ms.fd")
        smm = live.find("features/smm")
        assert smm is not None and smm.get("state") == "on"
    else:
        assert loader.get("secure") in (None, "no")
        assert ".ms." not in loader.text and "secboot" not in loader.text


def test_explicit_ovmf_paths_start(libvirtd: Libvirtd, tmp_path: Path) -> None:
    vm = small(secure_boot_vm(name="h2k-explicit-ovmf"))
    ovmf = OvmfPaths(
        code="/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
        vars_template="/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
    )
    libvirtd.virsh("define", str(write_domain(vm, tmp_path, "qcow2", ovmf)))
    try:
        libvirtd.virsh("start", vm.name)
        wait_until(
            lambda: libvirtd.virsh("domstate", vm.name).strip() == "running",
            RUNNING_DEADLINE_S,
            f"domain {vm.name!r} running",
        )
        check_firmware(ET.fromstring(libvirtd.virsh("dumpxml", vm.name)), vm)
    finally:
        if vm.name in libvirtd.virsh("list", "--name").splitlines():
            libvirtd.virsh("destroy", vm.name)
        libvirtd.virsh("undefine", "--nvram", vm.name)
