"""Output names and KubeVirt names: what is refused, what each VM's files are called."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from migration.model import MigrationProblem, VmDisk
from migration.naming import (
    MAX_KUBEVIRT_NAME,
    check_vm_name,
    disk_output_names,
    kubevirt_name,
    kubevirt_volume_names,
    output_names,
    plan_disk_outputs,
)
from tests.unit.migration.writer_builders import two_disk_bios_vm

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "empty"),
        ("a/b", "'/'"),
        ("/", "'/'"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("web\x00", "control"),
        ("web\nx", "control"),
        ("web\x7f", "control"),
        (".hidden", "start with '.'"),
        ("-rf", "start with '.' or '-'"),
        (" web", "white space"),
        ("web ", "white space"),
        ("x" * 101, "longer than 100 bytes"),
        ("é" * 51, "longer than 100 bytes"),
    ],
)
def test_check_vm_name_refuses(name: str, rule: str) -> None:
    with pytest.raises(MigrationProblem) as caught:
        check_vm_name(name)
    assert rule in str(caught.value)
    assert all(problem.startswith("name: ") for problem in caught.value.problems)


@pytest.mark.parametrize("name", ["web-01", "Web Server (prod)", "db_1.example", "x" * 100, "é"])
def test_check_vm_name_accepts(name: str) -> None:
    check_vm_name(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web-01", "web-01"),
        ("Web Server (prod)", "web-server-prod"),
        ("DB_1.example.com", "db-1-example-com"),
        ("--x--", "x"),
        ("Café-Größe", "cafe-gro-e"),
        ("0day", "0day"),
    ],
)
def test_kubevirt_name(name: str, expected: str) -> None:
    assert kubevirt_name(name) == expected


def test_kubevirt_name_of_a_long_name_is_cut_with_a_hash() -> None:
    first = kubevirt_name("a" * 80 + "-one")
    second = kubevirt_name("a" * 80 + "-two")
    assert len(first) == MAX_KUBEVIRT_NAME
    assert first != second
    assert first == kubevirt_name("a" * 80 + "-one")  # deterministic
    assert DNS_1123_LABEL.match(first) and DNS_1123_LABEL.match(second)


@pytest.mark.parametrize("name", ["", "---", "日本語", "..."])
def test_kubevirt_name_refuses_when_nothing_usable_remains(name: str) -> None:
    with pytest.raises(MigrationProblem, match="DNS-1123"):
        kubevirt_name(name)


def test_disk_output_names_boot_disk_first() -> None:
    assert disk_output_names(two_disk_bios_vm(), "qcow2") == ["web-01.qcow2", "web-01-data.qcow2"]
    assert disk_output_names(two_disk_bios_vm(), "raw") == ["web-01.raw", "web-01-data.raw"]


def test_output_names() -> None:
    names = output_names(two_disk_bios_vm(), "qcow2")
    assert names.disks == ("web-01.qcow2", "web-01-data.qcow2")
    assert names.domain_xml == "web-01.xml"
    assert names.kubevirt_yaml == "web-01.kubevirt.yaml"
    assert names.report_json == "web-01.report.json"


def test_plan_disk_outputs() -> None:
    outputs = plan_disk_outputs(two_disk_bios_vm(), "raw", "/out")
    assert [(o.disk_id, o.path, o.format, o.name) for o in outputs] == [
        ("disk-0", "/out/web-01.raw", "raw", "web-01.raw"),
        ("data", "/out/web-01-data.raw", "raw", "web-01-data.raw"),
    ]


@pytest.mark.parametrize(
    ("disk_id", "rule"), [("../x", "'..'"), ("a/b", "'/'"), ("", "empty"), ("-x", "'-'")]
)
def test_disk_output_names_refuses_bad_disk_ids(disk_id: str, rule: str) -> None:
    vm = two_disk_bios_vm()
    vm = replace(vm, disks=(vm.disks[0], replace(vm.disks[1], id=disk_id)))
    with pytest.raises(MigrationProblem, match=rule) as caught:
        disk_output_names(vm, "qcow2")
    assert caught.value.problems[0].startswith("disks[1].id: ")


def test_disk_output_names_refuses_duplicates_format_and_bad_name() -> None:
    vm = two_disk_bios_vm()
    third = VmDisk(id="data", path="/in/c.vmdk", source_format="vmdk")
    with pytest.raises(MigrationProblem, match=r"disks\[2\].id: 'data' gives 'web-01-data.qcow2'"):
        disk_output_names(replace(vm, disks=(*vm.disks, third)), "qcow2")
    with pytest.raises(MigrationProblem, match="format: 'vmdk'"):
        disk_output_names(vm, "vmdk")
    with pytest.raises(MigrationProblem, match="name: "):
        disk_output_names(replace(vm, name="../etc"), "qcow2")
    with pytest.raises(MigrationProblem, match="no disk"):
        disk_output_names(replace(vm, disks=()), "qcow2")


def test_kubevirt_volume_names_refuses_collisions() -> None:
    vm = two_disk_bios_vm()
    vm = replace(vm, disks=(vm.disks[0], replace(vm.disks[1], id="Data"), replace(vm.disks[1])))
    outputs = plan_disk_outputs(vm, "qcow2", "/out")
    with pytest.raises(MigrationProblem, match="KubeVirt name 'web-01-data'"):
        kubevirt_volume_names(outputs)


def test_a_migration_id_part_is_safe_and_short_enough_for_any_disk_id():
    from migration.naming import MAX_ID_NAME_PART, migration_id_part

    assert migration_id_part("web-01") == "web-01"
    assert migration_id_part("../web 01 (copy)") == "web-01-copy"
    assert migration_id_part("日本") == "vm"
    assert len(migration_id_part("x" * 300)) == MAX_ID_NAME_PART
    assert len(f"{migration_id_part('x' * 300)}-{'f' * 12}.disk.{'d' * 64}") <= 128
