from __future__ import annotations

from pathlib import Path

import pytest

from migration.model import DiskRole, Firmware, MigrationProblem
from migration.ovf import FileInfo, ovf_references, read_ovf
from migration.ovf_hardware import normalize_mac, unit_bytes

DATA = Path(__file__).parent / "data"
VMWARE = (DATA / "vmware-web-01.ovf").read_bytes()
VBOX = (DATA / "virtualbox-ubuntu.ovf").read_bytes()
VMWARE_FILES = {
    "web-01-disk1.vmdk": FileInfo("/exports/web-01-disk1.vmdk", size=1536),
    "web-01-disk2.vmdk": FileInfo("/exports/web-01-disk2.vmdk", size=1024),
}
VBOX_FILES = {"ubuntu-disk001.vmdk": FileInfo("/exports/ubuntu.ova", offset=7168, size=3000)}


def problems(descriptor: bytes, files: dict[str, FileInfo] | None = None) -> list[str]:
    with pytest.raises(MigrationProblem) as caught:
        read_ovf(descriptor, files=VMWARE_FILES if files is None else files)
    return caught.value.problems


def test_vmware_dialect() -> None:
    vm = read_ovf(VMWARE, files=VMWARE_FILES)
    assert (vm.name, vm.cpus, vm.memory_mib) == ("web-01", 2, 4096)
    assert vm.firmware is Firmware.UEFI and vm.secure_boot is True
    # Hard disk 1 is listed after Hard disk 2 but sits at SCSI 0:0.
    assert [d.id for d in vm.disks] == ["vmdisk1", "vmdisk2"]
    boot = vm.boot_disk
    assert boot.role is DiskRole.BOOT and vm.disks[1].role is DiskRole.DATA
    assert (boot.path, boot.source_format, boot.controller) == (
        "/exports/web-01-disk1.vmdk",
        "vmdk",
        "scsi",
    )
    assert boot.capacity_bytes == 20 * 2**30 and vm.disks[1].capacity_bytes == 10 * 2**30
    assert boot.label == "Hard disk 1"
    assert vm.nics[0].mac == "00:50:56:ab:cd:ef"
    assert (vm.nics[0].network, vm.nics[0].model) == ("VM Network", "VmxNet3")
    assert vm.source.provider == "vmware" and vm.source.vm_id == "web-01"
    assert vm.os_hint == "debian12_64Guest"
    assert "VirtualSystem/ProductSection" in vm.ignored
    assert "vmw:Config cpuHotAddEnabled" in vm.ignored
    assert "vmw:ExtraConfig nvram" in vm.ignored
    assert any("CD drive" in entry for entry in vm.ignored)
    assert any("graphics controller" in entry for entry in vm.ignored)
    assert "VirtualSystemType vmx-19" in vm.notes


def test_virtualbox_dialect() -> None:
    vm = read_ovf(VBOX, files=VBOX_FILES)
    assert (vm.name, vm.cpus, vm.memory_mib, vm.firmware) == ("ubuntu", 1, 2048, Firmware.UEFI)
    (disk,) = vm.disks
    assert (disk.offset, disk.size, disk.controller) == (7168, 3000, "sata")
    assert disk.capacity_bytes == 26843545600
    # No rasd:Address: the MAC comes from vbox:Machine's enabled adapter in slot 0.
    assert vm.nics[0].mac == "08:00:27:1a:2b:3c" and vm.nics[0].model == "E1000"
    assert vm.os_hint == "Ubuntu_64" and vm.source.provider == "virtualbox"
    assert any("sound card" in entry for entry in vm.ignored)


def test_references_are_listed() -> None:
    assert ovf_references(VMWARE) == {"file1": "web-01-disk1.vmdk", "file2": "web-01-disk2.vmdk"}


def test_file_missing_from_files_names_id_and_href() -> None:
    found = problems(VMWARE, {"web-01-disk1.vmdk": VMWARE_FILES["web-01-disk1.vmdk"]})
    assert found == [
        "References/File[ovf:id=file2]: ovf:href 'web-01-disk2.vmdk' is not among the files given"
    ]


def test_size_mismatch_is_a_problem() -> None:
    files = {**VMWARE_FILES, "web-01-disk2.vmdk": FileInfo("/x", size=1)}
    assert any("ovf:size says 1024" in p for p in problems(VMWARE, files))


@pytest.mark.parametrize(
    "prologue",
    [
        b'<!DOCTYPE Envelope [<!ENTITY boom "boom">]>',
        b'<!DOCTYPE Envelope SYSTEM "http://example.invalid/ovf.dtd">',
    ],
)
def test_dtds_and_entities_are_refused(prologue: bytes) -> None:
    doc = VMWARE.replace(b"<Envelope ", prologue + b"<Envelope ", 1)
    (problem,) = problems(doc)
    assert problem.startswith("descriptor: a DTD")


def test_undefined_entity_and_garbage_are_problems() -> None:
    assert problems(VMWARE.replace(b"<Name>web-01", b"<Name>&xxe;", 1))[0].startswith(
        "descriptor: not well-formed XML"
    )
    assert problems(b"not xml")[0].startswith("descriptor: not well-formed XML")
    assert problems(b"<a/>") == ["descriptor: root element is a, not Envelope"]


def test_virtual_system_collection_is_refused() -> None:
    doc = VMWARE.replace(
        b"<VirtualSystem ", b"<VirtualSystemCollection ovf:id='app'><VirtualSystem "
    )
    doc = doc.replace(b"</VirtualSystem>", b"</VirtualSystem></VirtualSystemCollection>")
    assert "VirtualSystemCollection" in problems(doc)[0]


def test_ovf_2_namespaces_read_alike() -> None:
    doc = VMWARE.replace(
        b"http://schemas.dmtf.org/ovf/envelope/1", b"http://schemas.dmtf.org/ovf/envelope/2"
    )
    vm = read_ovf(doc, files=VMWARE_FILES)
    assert vm.name == "web-01" and len(vm.disks) == 2


def test_compressed_file_and_remote_href_are_refused() -> None:
    doc = VMWARE.replace(b'ovf:id="file2"', b'ovf:id="file2" ovf:compression="gzip"')
    assert any("ovf:compression 'gzip'" in p for p in problems(doc))
    doc = VMWARE.replace(b'ovf:href="web-01-disk2.vmdk"', b'ovf:href="http://evil/disk.vmdk"')
    assert any("must name a file beside the descriptor" in p for p in problems(doc))


def test_controller_order_decides_the_boot_disk() -> None:
    # Move Hard disk 2 to the IDE controller, which appears after the SCSI one.
    drive = b"<rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource>"
    start = VMWARE.index(drive)
    end = VMWARE.index(b"</Item>", start)
    moved = VMWARE[start:end].replace(b"<rasd:Parent>3<", b"<rasd:Parent>4<")
    doc = VMWARE[:start] + moved + VMWARE[end:]
    vm = read_ovf(doc, files=VMWARE_FILES)
    assert [(d.id, d.controller) for d in vm.disks] == [("vmdisk1", "scsi"), ("vmdisk2", "ide")]
    assert any("more than one controller" in n for n in vm.notes)


def test_bad_name_units_and_quantities() -> None:
    assert "VirtualSystem/Name: must not contain '/'" in problems(
        VMWARE.replace(b"<Name>web-01</Name>", b"<Name>web/01</Name>")
    )
    assert any(
        "AllocationUnits 'furlongs'" in p
        for p in problems(VMWARE.replace(b"byte * 2^20", b"furlongs"))
    )
    assert any(
        "VirtualQuantity 'two'" in p
        for p in problems(
            VMWARE.replace(b"<rasd:VirtualQuantity>2<", b"<rasd:VirtualQuantity>two<")
        )
    )


@pytest.mark.parametrize(
    ("units", "factor"),
    [("byte", 1), ("byte * 2^20", 2**20), ("byte*2^30", 2**30), ("MegaBytes", 2**20),
     ("GigaBytes", 2**30), ("byte * 10^3", 1000), ("hertz * 10^6", None), ("byte * 3^2", None)],
)  # fmt: skip
def test_unit_bytes(units: str, factor: int | None) -> None:
    assert unit_bytes(units) == factor


@pytest.mark.parametrize(
    ("text", "mac"),
    [("00:50:56:AB:CD:EF", "00:50:56:ab:cd:ef"), ("0800271A2B3C", "08:00:27:1a:2b:3c"),
     ("00-50-56-ab-cd-ef", "00:50:56:ab:cd:ef"), ("00:50:56", ""), ("zz:50:56:ab:cd:ef", "")],
)  # fmt: skip
def test_normalize_mac(text: str, mac: str) -> None:
    assert normalize_mac(text) == mac
