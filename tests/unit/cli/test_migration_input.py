"""What `h2kctl migrate` makes of its inputs: a HyperSDK manifest unchanged, an OVF beside its
disks, network options; bad input named, nothing sent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli.migration_input import migration_id_for, parse_network, read_input
from migration.model import MigrationProblem

EXAMPLES = Path(__file__).resolve().parents[1] / "migration" / "data"


def manifest_with_disks(tmp_path: Path) -> Path:
    document = json.loads((EXAMPLES / "vsphere-artifact-manifest.json").read_text())
    for i, disk in enumerate(document["disks"]):
        image = tmp_path / f"disk{i}.vmdk"
        image.write_bytes(b"KDMV")
        disk["local_path"] = str(image)
    path = tmp_path / "artifact-manifest.json"
    path.write_text(json.dumps(document))
    return path


def test_a_hypersdk_manifest_becomes_a_spec_with_its_boot_disk_first(tmp_path):
    network = dict([parse_network("VM Network=network:default")])
    spec = read_input(
        str(manifest_with_disks(tmp_path)), migration_id=None, output_directory="", networks=network
    )
    assert spec.migration_id == "web-01"  # the VM name: a re-drop is the same migration
    assert [d.id for d in spec.vm.disks] == ["disk-0", "disk-2"]
    assert spec.output_directory == "/var/lib/hyper2kvm/output"
    assert spec.pipeline.repair and spec.pipeline.fstab_mode == "stabilize-all"
    assert spec.pipeline.compress and spec.pipeline.validate
    assert spec.network_map["VM Network"].libvirt_network == "default"
    assert spec.labels["wave"] == "3"
    assert spec.vm.nics[0].mac == "00:50:56:ab:cd:ef"


def test_a_missing_disk_file_is_named_and_nothing_is_built(tmp_path):
    path = manifest_with_disks(tmp_path)
    (tmp_path / "disk1.vmdk").unlink()
    with pytest.raises(MigrationProblem) as err:
        read_input(str(path), migration_id=None, output_directory="/out", networks={})
    assert any(p.startswith(f"{path}: disks[1].local_path") for p in err.value.problems)


def test_network_options_are_checked():
    name, target = parse_network("VM Network=bridge:br0,multus:default/vlan10")
    assert name == "VM Network" and target.libvirt_bridge == "br0"
    assert target.kubevirt_network == "default/vlan10"
    for bad in ("VM Network", "=network:x", "n=pod", "n=tunnel:x"):
        with pytest.raises(MigrationProblem):
            parse_network(bad)


def test_an_unsafe_vm_name_gets_a_safe_distinct_id():
    assert migration_id_for("web-01", b"x") == "web-01"
    odd = migration_id_for("web 01 (copy)", b"x")
    assert odd.startswith("web-01-copy-") and odd != migration_id_for("web 01 (copy)", b"y")


def test_an_ovf_names_a_file_that_is_not_beside_it(tmp_path):
    source = next(EXAMPLES.glob("*.ovf"), None)
    if source is None:
        pytest.fail("tests/unit/migration/data has no OVF example")
    ovf = tmp_path / source.name
    shutil.copy(source, ovf)
    with pytest.raises(MigrationProblem) as err:
        read_input(str(ovf), migration_id=None, output_directory="/out", networks={})
    assert any("not" in p for p in err.value.problems)


def test_settings_h2k_does_not_act_on_are_explained_and_a_foreign_filename_is_refused(tmp_path):
    path = manifest_with_disks(tmp_path)
    document = json.loads(path.read_text())
    document["pipeline"]["convert"]["compress_level"] = 6
    path.write_text(json.dumps(document))
    networks = dict([parse_network("VM Network=network:default")])
    spec = read_input(str(path), migration_id=None, output_directory="", networks=networks)
    notes = "\n".join(spec.vm.notes)
    assert "pipeline.fix.backup: nothing to back up" in notes
    assert "pipeline.convert.compress_level 6: not used" in notes
    document["output"]["filename"] = "other.qcow2"
    path.write_text(json.dumps(document))
    with pytest.raises(MigrationProblem) as err:
        read_input(str(path), migration_id=None, output_directory="", networks=networks)
    assert "output.filename: 'other.qcow2' is not supported" in "\n".join(err.value.problems)
