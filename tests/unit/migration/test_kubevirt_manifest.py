"""The KubeVirt VirtualMachine manifest: field by field, and against the v1 shape check."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
import yaml

from migration.kubevirt import virtual_machine, virtual_machine_yaml
from migration.model import MigrationProblem, NetworkMap, NetworkTarget
from tests.unit.migration.kubevirt_shape import virtual_machine_problems
from tests.unit.migration.writer_builders import (
    network_map,
    outputs_for,
    secure_boot_vm,
    two_disk_bios_vm,
)


def load(document: str) -> Any:
    return yaml.safe_load(document)


def test_two_disk_bios_vm() -> None:
    vm = two_disk_bios_vm()
    manifest = load(virtual_machine_yaml(vm, outputs_for(vm), network_map(), namespace="migrated"))
    assert virtual_machine_problems(manifest) == []
    assert list(manifest) == ["apiVersion", "kind", "metadata", "spec"]  # sort_keys=False
    assert manifest["apiVersion"] == "kubevirt.io/v1"
    assert manifest["kind"] == "VirtualMachine"
    assert manifest["metadata"] == {
        "name": "web-01",
        "namespace": "migrated",
        "labels": {"app.kubernetes.io/managed-by": "h2k"},
        "annotations": {"h2k.io/source-vm-name": "web-01"},
    }
    spec = manifest["spec"]
    assert spec["runStrategy"] == "Halted" and "running" not in spec
    assert spec["template"]["metadata"] == {"labels": {"kubevirt.io/domain": "web-01"}}
    domain = spec["template"]["spec"]["domain"]
    assert domain["cpu"] == {"sockets": 1, "cores": 2, "threads": 1}
    assert domain["memory"] == {"guest": "4096Mi"}
    assert domain["resources"] == {"requests": {"memory": "4096Mi"}}
    assert domain["machine"] == {"type": "q35"}
    assert domain["firmware"] == {"bootloader": {"bios": {}}}
    assert "features" not in domain
    assert domain["devices"]["disks"] == [
        {"name": "web-01", "disk": {"bus": "virtio"}, "bootOrder": 1},
        {"name": "web-01-data", "disk": {"bus": "virtio"}, "bootOrder": 2},
    ]
    assert domain["devices"]["interfaces"] == [
        {"name": "nic0", "model": "virtio", "macAddress": "00:50:56:aa:bb:01", "masquerade": {}},
        {"name": "nic1", "model": "virtio", "macAddress": "00:50:56:aa:bb:02", "bridge": {}},
    ]
    assert domain["devices"]["rng"] == {}
    template_spec = spec["template"]["spec"]
    assert template_spec["networks"] == [
        {"name": "nic0", "pod": {}},
        {"name": "nic1", "multus": {"networkName": "infra/backup"}},
    ]
    assert template_spec["volumes"] == [
        {"name": "web-01", "dataVolume": {"name": "web-01"}},
        {"name": "web-01-data", "dataVolume": {"name": "web-01-data"}},
    ]


def test_secure_boot_vm_with_pvcs() -> None:
    vm = secure_boot_vm(name="Win App_2019")
    manifest = virtual_machine(
        vm, outputs_for(vm, "raw"), network_map(), storage="pvc", run_strategy="Always"
    )
    assert virtual_machine_problems(manifest) == []
    assert manifest["metadata"]["name"] == "win-app-2019"
    assert "namespace" not in manifest["metadata"]
    assert manifest["metadata"]["annotations"] == {"h2k.io/source-vm-name": "Win App_2019"}
    assert manifest["spec"]["runStrategy"] == "Always"
    domain = manifest["spec"]["template"]["spec"]["domain"]
    assert domain["firmware"] == {"bootloader": {"efi": {"secureBoot": True}}}
    assert domain["features"] == {"smm": {"enabled": True}}
    assert domain["cpu"]["cores"] == 4 and domain["memory"]["guest"] == "8192Mi"
    assert manifest["spec"]["template"]["spec"]["volumes"] == [
        {"name": "win-app-2019", "persistentVolumeClaim": {"claimName": "win-app-2019"}}
    ]
    assert domain["devices"]["interfaces"][0]["macAddress"] == "52:54:00:12:34:56"


def test_uefi_without_secure_boot_says_so() -> None:
    # KubeVirt's default for efi.secureBoot is true: false must be written out.
    vm = replace(secure_boot_vm(), secure_boot=False)
    manifest = virtual_machine(vm, outputs_for(vm), network_map())
    domain = manifest["spec"]["template"]["spec"]["domain"]
    assert domain["firmware"] == {"bootloader": {"efi": {"secureBoot": False}}}
    assert "features" not in domain
    assert virtual_machine_problems(manifest) == []


def test_vm_without_nics_gets_no_pod_interface() -> None:
    vm = replace(two_disk_bios_vm(), nics=())
    manifest = virtual_machine(vm, outputs_for(vm), NetworkMap())
    assert virtual_machine_problems(manifest) == []
    devices = manifest["spec"]["template"]["spec"]["domain"]["devices"]
    assert devices["interfaces"] == [] and devices["autoattachPodInterface"] is False


def test_yaml_keeps_unicode_and_special_characters() -> None:
    vm = two_disk_bios_vm(name='Café: "web" #1')
    document = virtual_machine_yaml(vm, outputs_for(vm), network_map())
    manifest = load(document)
    assert manifest["metadata"]["annotations"]["h2k.io/source-vm-name"] == 'Café: "web" #1'
    assert manifest["metadata"]["name"] == "cafe-web-1"
    assert virtual_machine_problems(manifest) == []


def test_unmapped_network_is_refused() -> None:
    vm = two_disk_bios_vm()
    networks = NetworkMap(targets={"VM Network": NetworkTarget()})
    with pytest.raises(MigrationProblem, match="'Backup' has no mapping"):
        virtual_machine_yaml(vm, outputs_for(vm), networks)


def test_two_nics_on_the_pod_network_are_refused() -> None:
    vm = two_disk_bios_vm()
    networks = network_map({"Backup": NetworkTarget(kubevirt_network="pod")})
    with pytest.raises(MigrationProblem, match="at most one pod network"):
        virtual_machine_yaml(vm, outputs_for(vm), networks)


@pytest.mark.parametrize(
    ("keywords", "problem"),
    [
        ({"namespace": "Bad_NS"}, "namespace: 'Bad_NS'"),
        ({"storage": "hostdisk"}, "storage: 'hostdisk'"),
        ({"run_strategy": "Sometimes"}, "run_strategy: 'Sometimes'"),
    ],
)
def test_bad_options_are_refused(keywords: dict[str, Any], problem: str) -> None:
    vm = two_disk_bios_vm()
    with pytest.raises(MigrationProblem, match=problem):
        virtual_machine_yaml(vm, outputs_for(vm), network_map(), **keywords)


def test_bad_names_and_missing_outputs_are_refused() -> None:
    vm = two_disk_bios_vm()
    with pytest.raises(MigrationProblem, match="must not contain '/'"):
        virtual_machine_yaml(replace(vm, name="a/b"), outputs_for(vm), network_map())
    with pytest.raises(MigrationProblem, match="no letter or digit"):
        virtual_machine_yaml(replace(vm, name="日本"), outputs_for(vm), network_map())
    with pytest.raises(MigrationProblem, match="not one per disk"):
        virtual_machine_yaml(vm, outputs_for(vm)[:1], network_map())


# The shape check itself must catch what it claims to: each mutation breaks one rule.
def _domain(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]["domain"]


SHAPE_MUTATIONS = [
    (lambda m: m.update(apiVersion="kubevirt.io/v1alpha3"), "$.apiVersion"),
    (lambda m: m["metadata"].update(name="Web_01"), "$.metadata.name"),
    (lambda m: m["spec"].update(running=False), "exactly one of running and runStrategy"),
    (lambda m: _domain(m).pop("devices"), "devices: is required"),
    (lambda m: _domain(m)["memory"].update(guest="4096MB"), "memory.guest: '4096MB'"),
    (lambda m: _domain(m)["resources"]["requests"].update(memory=4096), "requests.memory: 4096"),
    (lambda m: _domain(m)["devices"]["disks"][1].update(name="other"), "do not match the disks"),
    (lambda m: _domain(m)["devices"]["disks"][1].update(bootOrder=1), "boot orders [1, 1]"),
    (lambda m: _domain(m)["devices"]["interfaces"][1].update(name="x"), "do not match the inter"),
    (lambda m: _domain(m)["devices"]["interfaces"][0].update(macaddress="x"), "macaddress: is not"),
    (lambda m: _domain(m)["devices"]["interfaces"][1].update(masquerade={}), "exactly one of"),
    (lambda m: _domain(m)["firmware"]["bootloader"].update(efi={}), "exactly one of ['bios'"),
    (lambda m: _domain(m)["cpu"].update(cores=0), "cpu.cores: 0"),
]


@pytest.mark.parametrize(("mutate", "problem"), SHAPE_MUTATIONS)
def test_shape_check_catches(mutate, problem: str) -> None:
    vm = two_disk_bios_vm()
    manifest = copy.deepcopy(virtual_machine(vm, outputs_for(vm), network_map()))
    mutate(manifest)
    problems = virtual_machine_problems(manifest)
    assert any(problem in p for p in problems), problems


def test_shape_check_wants_smm_with_secure_boot() -> None:
    vm = secure_boot_vm()
    manifest = virtual_machine(vm, outputs_for(vm), network_map())
    del _domain(manifest)["features"]
    assert virtual_machine_problems(manifest) == [
        "$.spec.template.spec.domain.features.smm.enabled: must be true with EFI secure boot"
    ]
