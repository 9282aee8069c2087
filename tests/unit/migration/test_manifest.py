from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migration.manifest import read_manifest
from migration.model import DiskRole, Firmware, MigrationProblem

DATA = Path(__file__).parent / "data"


def exists(_: str) -> bool:
    return True


def manifest(**top: Any) -> dict[str, Any]:
    """A minimal valid manifest; keyword arguments replace top-level keys (None drops one)."""
    doc: dict[str, Any] = {
        "manifest_version": "1.0",
        "source": {"provider": "vsphere", "vm_name": "web-01"},
        "disks": [disk()],
    }
    for key, value in top.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def disk(**fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "disk-0",
        "source_format": "vmdk",
        "bytes": 1024,
        "local_path": "/exports/web-01/disk0.vmdk",
    }
    for key, value in fields.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def problems(doc: object, path_exists: Any = exists) -> list[str]:
    text = doc if isinstance(doc, str | bytes) else json.dumps(doc)
    with pytest.raises(MigrationProblem) as caught:
        read_manifest(text, path_exists=path_exists)
    return caught.value.problems


def test_vsphere_example_with_local_paths_rewritten(tmp_path: Path) -> None:
    doc = json.loads((DATA / "vsphere-artifact-manifest.json").read_text())
    real = {}
    for item in doc["disks"]:
        image = tmp_path / Path(item["local_path"]).name
        image.write_bytes(b"\0" * 512)
        real[item["local_path"]] = str(image)
        item["local_path"] = str(image)
    parsed = read_manifest(json.dumps(doc), path_exists=lambda p: Path(p).exists())
    vm = parsed.vm
    assert vm.name == "web-01"
    assert (vm.cpus, vm.memory_mib, vm.firmware, vm.secure_boot) == (2, 4096, Firmware.BIOS, False)
    assert [d.id for d in vm.disks] == ["disk-0", "disk-2"]
    assert vm.boot_disk.role is DiskRole.BOOT
    assert vm.disks[1].role is DiskRole.DATA
    assert vm.boot_disk.path == real["/exports/web-01/web-01-disk1.vmdk"]
    assert vm.nics[0].mac == "00:50:56:ab:cd:ef" and vm.nics[0].network == "VM Network"
    assert vm.source.datacenter == "DC1" and vm.source.vm_id == "vm-1042"
    assert vm.os_hint == "linux" and parsed.options.os_version == "debian12"
    assert vm.ignored == ()
    options = parsed.options
    assert options.pipeline is not None
    assert options.pipeline.fix.fstab_mode == "stabilize-all"
    assert options.pipeline.convert.compress is True
    assert options.output.directory == "/var/lib/hyper2kvm/output"
    assert options.metadata.tags == {"wave": "3"}
    assert options.metadata.job_id == "job-abc-123"
    assert options.export_timestamp is not None and options.export_timestamp.year == 2026
    assert options.hypersdk_result_name == "web-01"
    assert options.disk_bytes == {"disk-0": 2147483648, "disk-2": 1073741824}


def test_azure_example_uefi_and_pipeline_defaults() -> None:
    raw = (DATA / "azure-manifest.json").read_bytes()
    asked: list[str] = []
    parsed = read_manifest(raw, path_exists=lambda p: asked.append(p) or True)
    assert asked == ["/exports/db-07/db-07-osdisk.vhd"]
    vm = parsed.vm
    assert (vm.name, vm.cpus, vm.memory_mib, vm.firmware) == ("db-07", 4, 16384, Firmware.UEFI)
    assert vm.boot_disk.source_format == "vhd"
    assert vm.boot_disk.checksum.startswith("sha256:")
    pipeline = parsed.options.pipeline
    assert pipeline is not None
    # Left out of a given stage: HyperSDK's defaults; given false: false.
    assert pipeline.fix.backup and pipeline.fix.update_grub and pipeline.fix.remove_vmware_tools
    assert pipeline.convert.compress is False
    assert pipeline.inspect.collect_guest_info is True
    assert parsed.options.report.enabled and parsed.options.report.path == "report.json"


def test_not_json_is_one_clear_problem() -> None:
    assert problems("{not json")[0].startswith("document: not a JSON document")
    assert problems(b"\xff\xfe\xfa")[0].startswith("document: not a JSON document")
    assert problems('{"a": NaN}')[0].startswith("document: not a JSON document")
    assert problems("[1, 2]") == ["document: must be an object, not a list"]


@pytest.mark.parametrize("key", ["manifest_version", "disks"])
def test_required_top_level_fields(key: str) -> None:
    assert f"{key}: is required" in problems(manifest(**{key: None}))


@pytest.mark.parametrize("version", ["1", "1.1", 1.0, "2.0"])
def test_manifest_version_must_be_exactly_1_0(version: object) -> None:
    assert 'manifest_version: must be "1.0"' in problems(manifest(manifest_version=version))


def test_disks_must_not_be_empty_or_a_scalar() -> None:
    assert "disks: must list at least one disk" in problems(manifest(disks=[]))
    assert "disks: must be a list, not an object" in problems(manifest(disks={}))
    assert "disks[0]: must be an object, not a string" in problems(manifest(disks=["x"]))


@pytest.mark.parametrize("field", ["id", "source_format", "bytes", "local_path"])
def test_required_disk_fields(field: str) -> None:
    doc = manifest(disks=[disk(), disk(**{"id": "disk-1", field: None})])
    assert f"disks[1].{field}: is required" in problems(doc)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("id", "disk 0", "disks[0].id: must match [a-zA-Z0-9_-]+"),
        (
            "source_format",
            "iso",
            "disks[0].source_format: must be one of vmdk, qcow2, raw, vhd, vhdx, vdi",
        ),
        ("bytes", -1, "disks[0].bytes: must be >= 0"),
        ("bytes", 1.5, "disks[0].bytes: must be an integer, not a number"),
        ("bytes", "12", "disks[0].bytes: must be an integer, not a string"),
        ("bytes", True, "disks[0].bytes: must be an integer, not a boolean"),
        ("bytes", 2**63, "disks[0].bytes: must be <= 9223372036854775807"),
        ("checksum", "sha256:ABC", "disks[0].checksum: must match sha256:[a-f0-9]{64}"),
        ("checksum", "md5:" + "0" * 32, "disks[0].checksum: must match sha256:[a-f0-9]{64}"),
        ("boot_order_hint", "1", "disks[0].boot_order_hint: must be an integer, not a string"),
        ("disk_type", "os", "disks[0].disk_type: must be one of boot, data, unknown"),
        (
            "local_path",
            "disk0.vmdk",
            "disks[0].local_path: must be an absolute path, not 'disk0.vmdk'",
        ),
        ("local_path", "/a\0b", "disks[0].local_path: must not contain NUL"),
        ("label", 3, "disks[0].label: must be a string, not a number"),
    ],
)
def test_disk_field_rules(field: str, value: object, expected: str) -> None:
    assert expected in problems(manifest(disks=[disk(**{field: value})]))


def test_missing_local_path_names_the_path() -> None:
    doc = manifest(disks=[disk(), disk(id="disk-1", local_path="/x/y.vmdk")])
    found = problems(doc, path_exists=lambda p: p != "/x/y.vmdk")
    assert found == ["disks[1].local_path: /x/y.vmdk does not exist"]


def test_duplicate_disk_ids() -> None:
    doc = manifest(disks=[disk(), disk(local_path="/b.vmdk")])
    assert problems(doc) == ["disks[1].id: 'disk-0' is used by disks[0] too"]


def test_all_problems_are_reported_together() -> None:
    doc = manifest(
        manifest_version="2",
        disks=[disk(source_format="iso"), disk(bytes=None)],
        vm={"firmware": "coreboot", "verbose": 1},
        options={"verbose": 7},
    )
    found = problems(doc)
    assert 'manifest_version: must be "1.0"' in found
    assert "disks[0].source_format: must be one of vmdk, qcow2, raw, vhd, vhdx, vdi" in found
    assert "disks[1].bytes: is required" in found
    assert "disks[1].id: 'disk-0' is used by disks[0] too" in found
    assert "vm.firmware: must be one of bios, uefi, unknown" in found
    assert "options.verbose: must be between 0 and 3" in found


def test_unknown_keys_are_accepted_and_listed_by_path() -> None:
    doc = manifest(
        secure_boot=True,
        target_format="qcow2",
        inject_drivers=["virtio"],
        test_boot=True,
        disks=[disk(partition_table="gpt")],
        pipeline={"fix": {"enabled": True, "selinux_relabel": True}},
    )
    vm = read_manifest(json.dumps(doc), path_exists=exists).vm
    assert set(vm.ignored) == {
        "secure_boot",
        "target_format",
        "inject_drivers",
        "test_boot",
        "disks[0].partition_table",
        "pipeline.fix.selinux_relabel",
    }


def test_key_given_twice_is_a_problem() -> None:
    text = '{"manifest_version": "1.0", "manifest_version": "1.0", "disks": []}'
    assert "manifest_version: is given more than once" in problems(text)


def test_boot_disk_without_hint_first_even_when_a_data_disk_has_hint_1() -> None:
    doc = manifest(
        disks=[
            disk(id="disk-3", local_path="/d3", disk_type="data", boot_order_hint=1),
            disk(id="disk-0", local_path="/d0", disk_type="boot"),
            disk(id="disk-1", local_path="/d1", disk_type="data"),
        ]
    )
    vm = read_manifest(json.dumps(doc), path_exists=exists).vm
    assert [d.id for d in vm.disks] == ["disk-0", "disk-3", "disk-1"]
    assert vm.boot_disk.role is DiskRole.BOOT


def test_without_a_boot_disk_hints_decide_missing_counts_999_stable() -> None:
    doc = manifest(
        disks=[
            disk(id="a", local_path="/a"),
            disk(id="b", local_path="/b", boot_order_hint=1000),
            disk(id="c", local_path="/c", boot_order_hint=2),
            disk(id="d", local_path="/d"),
        ]
    )
    vm = read_manifest(json.dumps(doc), path_exists=exists).vm
    assert [d.id for d in vm.disks] == ["c", "a", "d", "b"]
    assert vm.boot_disk.role is DiskRole.BOOT  # unknown upgraded: the first disk boots


def test_data_disk_first_by_hints_is_noted() -> None:
    doc = manifest(
        disks=[
            disk(id="a", local_path="/a", disk_type="boot", boot_order_hint=5),
            disk(id="b", local_path="/b", disk_type="data", boot_order_hint=1),
        ]
    )
    vm = read_manifest(json.dumps(doc), path_exists=exists).vm
    assert [d.id for d in vm.disks] == ["b", "a"]
    assert any("data disk but boots first" in n for n in vm.notes)


def test_vm_name_falls_back_to_vm_id_but_hypersdk_waits_for_vm() -> None:
    doc = manifest(source={"provider": "vsphere", "vm_id": "vm-1042"})
    parsed = read_manifest(json.dumps(doc), path_exists=exists)
    assert parsed.vm.name == "vm-1042"
    assert parsed.options.hypersdk_result_name == "vm"


def test_no_name_at_all_is_a_problem() -> None:
    assert any(p.startswith("source.vm_name: is required") for p in problems(manifest(source=None)))


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "must not be empty"),
        ("a/b", "must not contain '/'"),
        ("..", "must not contain '..'"),
        ("a\0b", "must not contain NUL or control characters"),
        ("a\nb", "must not contain NUL or control characters"),
        ("a\x7fb", "must not contain NUL or control characters"),
    ],
)
def test_vm_name_rules(name: str, rule: str) -> None:
    doc = manifest(source={"provider": "x", "vm_name": name, "vm_id": "vm-1"})
    assert f"source.vm_name: {rule}" in problems(doc)


def test_vm_id_fallback_must_obey_name_rules() -> None:
    doc = manifest(source={"provider": "azure", "vm_id": "/subscriptions/x/vm"})
    assert problems(doc) == [
        "source.vm_id: must not contain '/' (used as the VM name: source.vm_name is missing)"
    ]


def test_firmware_unknown_becomes_bios_with_a_note_and_secureboot_maps() -> None:
    vm = read_manifest(json.dumps(manifest(vm={"firmware": "unknown"})), path_exists=exists).vm
    assert vm.firmware is Firmware.BIOS
    assert any("vm.firmware not known" in n for n in vm.notes)
    vm = read_manifest(
        json.dumps(manifest(vm={"firmware": "uefi", "secureboot": True})), path_exists=exists
    ).vm
    assert vm.firmware is Firmware.UEFI and vm.secure_boot is True


def test_secureboot_with_bios_is_a_problem() -> None:
    doc = manifest(vm={"firmware": "bios", "secureboot": True})
    assert problems(doc) == ["vm.secureboot: true needs vm.firmware uefi, not bios"]


@pytest.mark.parametrize(
    ("section", "value", "expected"),
    [
        ("vm", {"cpu": "2"}, "vm.cpu: must be an integer, not a string"),
        ("vm", {"mem_gb": -1}, "vm.mem_gb: must be between 0 and"),
        ("vm", {"secureboot": "yes"}, "vm.secureboot: must be true or false, not a string"),
        (
            "source",
            {"vm_name": "a", "export_timestamp": "yesterday"},
            "source.export_timestamp: must be an RFC 3339",
        ),
        ("nics", [{"mac": "00:50:56"}], "nics[0].mac: must match"),
        (
            "nics",
            [{"mac": "00:50:56:00:00:01"}, {"mac": "00:50:56:00:00:01"}],
            "nics[1].mac: 00:50:56:00:00:01 is used by nics[0] too",
        ),
        ("nics", {"id": "x"}, "nics: must be a list, not an object"),
        ("notes", ["ok", 3], "notes[1]: must be a string, not a number"),
        ("warnings", [{"stage": "export"}], "warnings[0].message: is required"),
        ("metadata", {"tags": {"wave": 3}}, "metadata.tags.wave: must be a string, not a number"),
        ("metadata", {"created_at": "2026-11-30"}, "metadata.created_at: must be an RFC 3339"),
        ("pipeline", {"fix": {"fstab_mode": "all"}}, "pipeline.fix.enabled: is required"),
        (
            "pipeline",
            {"fix": {"enabled": True, "fstab_mode": "all"}},
            "pipeline.fix.fstab_mode: must be one of stabilize-all, bypath-only, noop",
        ),
        (
            "pipeline",
            {"convert": {"enabled": True, "compress_level": 10}},
            "pipeline.convert.compress_level: must be between 1 and 9",
        ),
        (
            "pipeline",
            {"convert": {"enabled": True, "compress_level": 0}},
            "pipeline.convert.compress_level: must be between 1 and 9",
        ),
        (
            "pipeline",
            {"validate": {"enabled": 1}},
            "pipeline.validate.enabled: must be true or false, not a number",
        ),
        ("output", {"format": "vmdk"}, "output.format: must be one of qcow2, raw, vdi"),
        ("output", {"directory": "out"}, "output.directory: must be an absolute path"),
        ("output", {"filename": "../x.qcow2"}, "output.filename: must be a file name, without '/'"),
        ("options", {"verbose": -1}, "options.verbose: must be between 0 and 3"),
        ("options", {"dry_run": "true"}, "options.dry_run: must be true or false, not a string"),
        (
            "options",
            {"report": {"enabled": "no"}},
            "options.report.enabled: must be true or false, not a string",
        ),
        ("configuration", [], "configuration: must be an object, not a list"),
    ],
)
def test_optional_section_rules(section: str, value: object, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(manifest(**{section: value}))), expected


def test_options_and_output_are_typed() -> None:
    doc = manifest(
        output={"directory": "/out", "format": "raw", "filename": "web.img"},
        options={"dry_run": True, "verbose": 2, "report": {"enabled": True, "path": "r.json"}},
        configuration={"hostname": "web-01", "users": {"root": {}}, "colour": "blue"},
        warnings=[{"stage": "export", "message": "slow", "timestamp": "2026-11-30T21:14:05Z"}],
        notes=["exported while running"],
    )
    parsed = read_manifest(json.dumps(doc), path_exists=exists)
    options = parsed.options
    assert (options.output.format, options.output.filename) == ("raw", "web.img")
    assert options.dry_run and options.verbose == 2 and options.report.path == "r.json"
    assert options.configuration == {"hostname": "web-01", "users": {"root": {}}}
    assert options.warnings[0].stage == "export"
    assert options.pipeline is None
    assert "configuration.colour" in parsed.vm.ignored
    assert "manifest note: exported while running" in parsed.vm.notes
    assert any("looks for .qcow2" in n for n in parsed.vm.notes)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_field_names = st.sampled_from(
    [
        "manifest_version",
        "disks",
        "source",
        "vm",
        "nics",
        "notes",
        "warnings",
        "metadata",
        "pipeline",
        "configuration",
        "output",
        "options",
        "id",
        "source_format",
        "bytes",
        "local_path",
        "checksum",
        "boot_order_hint",
        "disk_type",
        "vm_name",
        "vm_id",
        "tags",
        "fix",
        "convert",
        "enabled",
        "report",
        "mac",
        "firmware",
        "secureboot",
    ]
)
_shaped = st.recursive(
    _json,
    lambda inner: st.dictionaries(_field_names, inner, max_size=6) | st.lists(inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_shaped)
def test_random_json_raises_only_migration_problem(doc: object) -> None:
    try:
        read_manifest(json.dumps(doc), path_exists=exists)
    except MigrationProblem as problem:
        assert problem.problems


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_field_names, _shaped, max_size=8))
def test_random_changes_to_a_valid_manifest_raise_only_migration_problem(extra: dict) -> None:
    doc = copy.deepcopy(manifest())
    doc.update(extra)
    try:
        read_manifest(json.dumps(doc), path_exists=exists)
    except MigrationProblem as problem:
        assert problem.problems


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_migration_problem(raw: bytes) -> None:
    try:
        read_manifest(raw, path_exists=exists)
    except MigrationProblem as problem:
        assert problem.problems
