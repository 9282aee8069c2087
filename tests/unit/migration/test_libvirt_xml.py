"""The libvirt domain XML, read back field by field."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from migration.libvirt import OvmfPaths, disk_target, domain_xml
from migration.model import DiskOutput, MigrationProblem, NetworkMap, NetworkTarget
from tests.unit.migration.writer_builders import (
    network_map,
    outputs_for,
    secure_boot_vm,
    two_disk_bios_vm,
)


def parse(document: str) -> ET.Element:
    return ET.fromstring(document)


def test_two_disk_bios_vm() -> None:
    vm = two_disk_bios_vm()
    root = parse(domain_xml(vm, outputs_for(vm), network_map()))
    assert root.tag == "domain" and root.get("type") == "kvm"
    assert root.findtext("name") == "web-01"
    assert (root.findtext("memory"), root.find("memory").get("unit")) == ("4096", "MiB")  # type: ignore[union-attr]
    assert root.findtext("currentMemory") == "4096"
    assert root.findtext("vcpu") == "2"
    os_element = root.find("os")
    assert os_element is not None and os_element.get("firmware") is None
    os_type = os_element.find("type")
    assert os_type is not None and os_type.text == "hvm"
    assert (os_type.get("arch"), os_type.get("machine")) == ("x86_64", "q35")
    assert os_element.find("loader") is None and os_element.find("firmware") is None
    assert root.find("features/smm") is None
    assert root.find("cpu").get("mode") == "host-model"  # type: ignore[union-attr]
    assert root.find("clock").get("offset") == "utc"  # type: ignore[union-attr]

    disks = root.findall("devices/disk")
    assert [d.get("type") for d in disks] == ["file", "file"]
    assert [d.find("driver").attrib for d in disks] == [{"name": "qemu", "type": "qcow2"}] * 2  # type: ignore[union-attr]
    assert [d.find("source").get("file") for d in disks] == [  # type: ignore[union-attr]
        "/out/web-01.qcow2",
        "/out/web-01-data.qcow2",
    ]
    assert [d.find("target").attrib for d in disks] == [  # type: ignore[union-attr]
        {"dev": "vda", "bus": "virtio"},
        {"dev": "vdb", "bus": "virtio"},
    ]
    assert [d.find("boot").get("order") for d in disks] == ["1", "2"]  # type: ignore[union-attr]

    nics = root.findall("devices/interface")
    assert [n.get("type") for n in nics] == ["network", "bridge"]
    assert nics[0].find("source").attrib == {"network": "default"}  # type: ignore[union-attr]
    assert nics[1].find("source").attrib == {"bridge": "br-backup"}  # type: ignore[union-attr]
    assert [n.find("mac").get("address") for n in nics] == [  # type: ignore[union-attr]
        "00:50:56:aa:bb:01",
        "00:50:56:aa:bb:02",
    ]
    assert [n.find("model").get("type") for n in nics] == ["virtio", "virtio"]  # type: ignore[union-attr]

    assert root.find("devices/serial").get("type") == "pty"  # type: ignore[union-attr]
    assert root.find("devices/serial/target").get("port") == "0"  # type: ignore[union-attr]
    assert root.find("devices/console").get("type") == "pty"  # type: ignore[union-attr]
    assert root.find("devices/rng").get("model") == "virtio"  # type: ignore[union-attr]
    assert root.findtext("devices/rng/backend") == "/dev/urandom"
    assert root.find("devices/memballoon").get("model") == "virtio"  # type: ignore[union-attr]
    channel = root.find("devices/channel/target")
    assert channel is not None and channel.get("name") == "org.qemu.guest_agent.0"
    assert root.find("devices/emulator") is None


def test_boot_order_follows_the_vm_not_the_outputs() -> None:
    vm = two_disk_bios_vm()
    root = parse(domain_xml(vm, list(reversed(outputs_for(vm))), network_map()))
    disks = root.findall("devices/disk")
    assert [d.find("source").get("file") for d in disks] == [  # type: ignore[union-attr]
        "/out/web-01.qcow2",
        "/out/web-01-data.qcow2",
    ]
    assert [d.find("boot").get("order") for d in disks] == ["1", "2"]  # type: ignore[union-attr]


def test_uefi_secure_boot_uses_firmware_autoselection() -> None:
    vm = secure_boot_vm()
    root = parse(domain_xml(vm, outputs_for(vm, "raw"), network_map(), domain_type="qemu"))
    assert root.get("type") == "qemu"
    assert root.find("cpu") is None  # TCG: QEMU's default model
    os_element = root.find("os")
    assert os_element is not None and os_element.get("firmware") == "efi"
    features = {f.get("name"): f.get("enabled") for f in os_element.findall("firmware/feature")}
    assert features == {"secure-boot": "yes", "enrolled-keys": "yes"}
    assert os_element.find("loader").attrib == {"secure": "yes"}  # type: ignore[union-attr]
    assert root.find("features/smm").get("state") == "on"  # type: ignore[union-attr]
    assert root.find("clock").get("offset") == "localtime"  # type: ignore[union-attr]
    assert root.find("devices/disk/driver").get("type") == "raw"  # type: ignore[union-attr]
    assert root.findtext("memory") == "8192" and root.findtext("vcpu") == "4"


def test_uefi_without_secure_boot() -> None:
    vm = replace(secure_boot_vm(), secure_boot=False)
    root = parse(domain_xml(vm, outputs_for(vm), network_map()))
    features = {f.get("name"): f.get("enabled") for f in root.findall("os/firmware/feature")}
    assert features == {"secure-boot": "no", "enrolled-keys": "no"}
    assert root.find("os/loader") is None and root.find("features/smm") is None


def test_uefi_with_explicit_ovmf_paths() -> None:
    vm = secure_boot_vm()
    ovmf = OvmfPaths(code="/fw/CODE.fd", vars_template="/fw/VARS.fd")
    root = parse(domain_xml(vm, outputs_for(vm), network_map(), ovmf=ovmf))
    assert root.find("os").get("firmware") is None  # type: ignore[union-attr]
    loader = root.find("os/loader")
    assert loader is not None and loader.text == "/fw/CODE.fd"
    assert loader.attrib == {"readonly": "yes", "secure": "yes", "type": "pflash"}
    assert root.find("os/nvram").get("template") == "/fw/VARS.fd"  # type: ignore[union-attr]


def test_emulator_and_no_guest_agent_channel() -> None:
    vm = two_disk_bios_vm()
    document = domain_xml(
        vm, outputs_for(vm), network_map(), emulator="/opt/qemu", guest_agent_channel=False
    )
    root = parse(document)
    assert root.findtext("devices/emulator") == "/opt/qemu"
    assert root.find("devices/channel") is None


def test_special_characters_are_escaped() -> None:
    vm = two_disk_bios_vm(name="a<b>&'\"c")
    outputs = [
        DiskOutput(disk_id="disk-0", path="/out/x&y<'\">.qcow2", format="qcow2", name="x"),
        DiskOutput(disk_id="data", path="/out/d]]>.qcow2", format="qcow2", name="d"),
    ]
    networks = network_map({"VM Network": NetworkTarget(libvirt_network="net&<'\">")})
    document = domain_xml(vm, outputs, networks)
    assert "<b>" not in document and "x&y" not in document
    root = parse(document)
    assert root.findtext("name") == "a<b>&'\"c"
    sources = [s.get("file") for s in root.findall("devices/disk/source")]
    assert sources == ["/out/x&y<'\">.qcow2", "/out/d]]>.qcow2"]
    assert root.find("devices/interface/source").get("network") == "net&<'\">"  # type: ignore[union-attr]


def test_unmapped_network_is_refused() -> None:
    vm = two_disk_bios_vm()
    networks = NetworkMap(targets={"VM Network": NetworkTarget(libvirt_network="default")})
    with pytest.raises(MigrationProblem) as caught:
        domain_xml(vm, outputs_for(vm), networks)
    assert caught.value.problems == ["nics[1].network: 'Backup' has no mapping in network_map"]


def test_bad_name_is_refused() -> None:
    vm = two_disk_bios_vm()
    with pytest.raises(MigrationProblem, match=r"name: '\.\./x'"):
        domain_xml(replace(vm, name="../x"), outputs_for(vm), network_map())


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda vm, outs: (vm, outs[:1]), "disks[1]: 'data' has no output"),
        (lambda vm, outs: (vm, [*outs, outs[0]]), "outputs[2].disk_id: 'disk-0' has two outputs"),
        (
            lambda vm, outs: (vm, [replace(outs[0], disk_id="x"), outs[1]]),
            "outputs[0].disk_id: 'x' is no disk",
        ),
        (lambda vm, outs: (vm, [replace(outs[0], format="vmdk"), outs[1]]), "outputs[0].format"),
        (lambda vm, outs: (replace(vm, cpus=0), outs), "cpus: 0"),
        (lambda vm, outs: (replace(vm, memory_mib=0), outs), "memory_mib: 0"),
        (lambda vm, outs: (replace(vm, secure_boot=True), outs), "secure_boot: needs firmware"),
        (
            lambda vm, outs: (replace(vm, nics=(replace(vm.nics[0], mac="00:50:56"),)), outs),
            "nics[0].mac: '00:50:56' is not a MAC",
        ),
        (
            lambda vm, outs: (
                replace(vm, nics=(replace(vm.nics[0], mac="01:00:5e:00:00:01"),)),
                outs,
            ),
            "multicast",
        ),
    ],
)
def test_inconsistent_inputs_are_refused(mutate, problem: str) -> None:
    vm, outputs = mutate(two_disk_bios_vm(), outputs_for(two_disk_bios_vm()))
    with pytest.raises(MigrationProblem) as caught:
        domain_xml(vm, outputs, network_map())
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_target_without_libvirt_side_and_bad_domain_type_are_refused() -> None:
    vm = two_disk_bios_vm()
    networks = network_map({"Backup": NetworkTarget(kubevirt_network="infra/backup")})
    with pytest.raises(MigrationProblem, match="neither a libvirt network nor a bridge"):
        domain_xml(vm, outputs_for(vm), networks)
    with pytest.raises(MigrationProblem, match="domain_type: 'xen'"):
        domain_xml(vm, outputs_for(vm), network_map(), domain_type="xen")


@pytest.mark.parametrize(
    ("index", "dev"),
    [(0, "vda"), (1, "vdb"), (25, "vdz"), (26, "vdaa"), (27, "vdab"), (701, "vdzz")],
)
def test_disk_target(index: int, dev: str) -> None:
    assert disk_target(index) == dev
