"""A migrated VM's definition, as the control plane publishes it, on a real libvirt.

The spec goes through the control plane's own intake (:func:`checked_spec`, :func:`new_record`)
and :func:`documents` makes ``<vm>.xml`` exactly as the publish job writes it; blank qcow2
images stand at the disk outputs' final paths. The XML validates, defines and starts.

Domain type: the control plane writes ``type='kvm'`` (with ``<cpu mode='host-model'>``): the
target of a migration to KVM is a KVM host, and a ``qemu`` (TCG) domain there would run
emulated without saying so. This sandbox's /dev/kvm hangs guests, so the test, and only the
test, sets ``type='qemu'`` before defining it (:func:`as_tcg`); everything else, the host-model
CPU included, is defined as published.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from controlplane.migrations.intake import checked_spec
from controlplane.migrations.plan import vm_of
from controlplane.migrations.report import documents
from controlplane.migrations.service import new_record
from migration.naming import output_names, plan_disk_outputs
from protocol.gen.h2k.v1 import migration_pb2
from tests.libvirt.conftest import TEST_NETWORK, Libvirtd, wait_until
from tests.libvirt.test_domains import RUNNING_DEADLINE_S, check_firmware
from tests.support.builders import migration_spec

CASES = {
    "bios-two-disks": {"firmware": "bios", "secure_boot": False},
    "uefi-secure-boot": {"firmware": "uefi", "secure_boot": True},
}


def migrated_spec(
    name: str, directory: Path, firmware: str, secure_boot: bool
) -> migration_pb2.MigrationSpec:
    """The builders' two-disk VM, small enough for TCG, its network mapped to the test's."""
    spec = migration_spec(migration_id=f"{name}-m1")
    spec.vm.name = name
    spec.vm.cpus, spec.vm.memory_mib = 1, 128
    spec.vm.firmware, spec.vm.secure_boot = firmware, secure_boot
    spec.output_directory = str(directory)
    spec.network_map["VM Network"].CopyFrom(
        migration_pb2.NetworkTarget(libvirt_network=TEST_NETWORK, kubevirt_network="pod")
    )
    return checked_spec(spec, requested_by="libvirt-test")


def publish(spec: migration_pb2.MigrationSpec) -> Path:
    """What the publish job leaves in the output directory: disks (blank here) and documents."""
    vm = vm_of(spec)
    for output in plan_disk_outputs(vm, spec.output_format, spec.output_directory):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", output.format, output.path, "16M"], check=True
        )
    directory = Path(spec.output_directory)
    for name, text in documents(new_record(spec), {}).items():
        (directory / name).write_text(text)
    return directory / output_names(vm, spec.output_format).domain_xml


def as_tcg(published: Path) -> Path:
    """The published domain with ``type='qemu'`` (TCG), nothing else changed (libvirt 9 runs
    ``<cpu mode='host-model'>`` under TCG too)."""
    domain = ET.parse(published).getroot()
    assert domain.get("type") == "kvm"  # what the control plane writes for a KVM host
    assert domain.find("cpu").get("mode") == "host-model"  # type: ignore[union-attr]
    domain.set("type", "qemu")
    target = published.with_name(f"tcg-{published.name}")
    ET.ElementTree(domain).write(target, encoding="unicode")
    return target


@pytest.mark.parametrize("case", list(CASES))
def test_a_published_domain_validates_defines_and_starts(
    libvirtd: Libvirtd, tmp_path: Path, case: str
) -> None:
    spec = migrated_spec(f"h2k-migrated-{case}", tmp_path, **CASES[case])
    vm = vm_of(spec)
    published = publish(spec)
    validated = subprocess.run(
        ["virt-xml-validate", str(published), "domain"], capture_output=True, text=True
    )
    assert validated.returncode == 0, validated.stderr + validated.stdout

    libvirtd.virsh("define", str(as_tcg(published)))
    try:
        libvirtd.virsh("start", vm.name)
        wait_until(
            lambda: libvirtd.virsh("domstate", vm.name).strip() == "running",
            RUNNING_DEADLINE_S,
            f"domain {vm.name!r} running",
        )
        live = ET.fromstring(libvirtd.virsh("dumpxml", vm.name))
        sources = [s.get("file") for s in live.findall("devices/disk/source")]
        # Boot disk first, under the names the publish job gives them.
        assert sources == [
            str(tmp_path / f"{vm.name}.qcow2"),
            str(tmp_path / f"{vm.name}-disk-2.qcow2"),
        ]
        interfaces = live.findall("devices/interface")
        assert [i.get("type") for i in interfaces] == ["network"]
        assert interfaces[0].find("source").get("network") == TEST_NETWORK  # type: ignore[union-attr]
        assert interfaces[0].find("mac").get("address") == "00:50:56:ab:cd:ef"  # type: ignore[union-attr]
        check_firmware(live, vm)
    finally:
        if vm.name in libvirtd.virsh("list", "--name").splitlines():
            libvirtd.virsh("destroy", vm.name)
        libvirtd.virsh("undefine", "--nvram", vm.name)
    assert vm.name not in libvirtd.virsh("list", "--all", "--name").splitlines()
