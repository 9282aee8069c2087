"""hyper2kvm direct mode, the pure parts: migration ids, stdout lines, the spec it builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from intake.direct import build_spec, main, parse_args
from intake.direct_parts import (
    EXIT_INVALID_INPUT,
    DirectFailure,
    migration_id_for,
    needs_root,
    output_lines,
    progress_line,
)
from intake.direct_remote import RemoteSettings, embedded_layout
from protocol.gen.h2k.v1 import migration_pb2
from protocol.migration_jobs import MIGRATION_ID_PATTERN

EXAMPLE = Path(__file__).resolve().parents[1] / "migration" / "data"


def _manifest(tmp_path: Path, **changes: Any) -> Path:
    document = json.loads((EXAMPLE / "vsphere-artifact-manifest.json").read_text())
    disks = tmp_path / "exports"
    disks.mkdir(exist_ok=True)
    for entry in document["disks"]:
        path = disks / Path(entry["local_path"]).name
        path.write_bytes(b"")
        entry["local_path"] = str(path)
    document["output"]["directory"] = str(tmp_path / "out")
    document.update(changes)
    path = tmp_path / "artifact-manifest.json"
    path.write_text(json.dumps(document))
    return path


def test_the_id_is_the_vm_name_and_a_digest_of_the_content() -> None:
    first = migration_id_for("web-01", b"{manifest}", {})
    assert first == migration_id_for("web-01", b"{manifest}", {})  # a re-run attaches
    assert first.startswith("web-01-") and len(first) == len("web-01-") + 12
    assert migration_id_for("web-01", b"{other}", {}) != first
    assert migration_id_for("web-01", b"{manifest}", {"dry_run": True}) != first


@pytest.mark.parametrize(
    "name",
    ["web 01", "../etc/passwd", "-.-", "", "ünïcode vm", "x" * 300, "a/b\\c:d", ".hidden"],
)
def test_every_id_matches_the_migration_id_pattern(name: str) -> None:
    mid = migration_id_for(name, b"doc", {})
    assert MIGRATION_ID_PATTERN.match(mid), mid
    # Job ids append ".disk.<disk id>" and must stay within 128 characters.
    assert len(mid) <= 73


def test_stdout_names_the_boot_disk_first_and_with_verbose_every_output() -> None:
    outputs = [
        "/out/web-01-disk-2.qcow2",
        "/out/web-01.xml",
        "/out/web-01.kubevirt.yaml",
        "/out/web-01.report.json",
        "/out/web-01.qcow2",
    ]
    assert output_lines(outputs, "/out/web-01.qcow2", verbose=False) == [
        "Output: /out/web-01.qcow2"
    ]
    assert output_lines(outputs, "/out/web-01.qcow2", verbose=True) == [
        "Output: /out/web-01.qcow2",
        "Output: /out/web-01-disk-2.qcow2",
        "Wrote: /out/web-01.xml",
        "Wrote: /out/web-01.kubevirt.yaml",
        "Wrote: /out/web-01.report.json",
    ]


def test_progress_lines_never_look_like_an_output_line() -> None:
    m = migration_pb2.Migration(
        spec=migration_pb2.MigrationSpec(migration_id="web-01-abc"),
        state=migration_pb2.MIGRATION_STATE_RUNNING,
        stage="disks",
        disks_total=2,
        bytes_done=1,
        bytes_total=4,
    )
    line = progress_line(m)
    assert line == "hyper2kvm: migration web-01-abc RUNNING stage=disks disks=0/2 progress=25%"
    assert not line.startswith(("Output:", "Wrote:"))


def test_the_spec_is_qcow2_with_every_nic_network_mapped(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, output={"directory": str(tmp_path / "out"), "format": "raw"})
    spec = build_spec(parse_args([str(manifest)]))
    assert spec.output_format == "qcow2"
    assert spec.migration_id.startswith("web-01-")
    assert spec.network_map["VM Network"].libvirt_network == "default"
    assert not spec.dry_run and needs_root(spec)
    again = build_spec(parse_args([str(manifest), "-v"]))
    assert again.migration_id == spec.migration_id  # -v does not change the migration
    dry = build_spec(parse_args([str(manifest), "--dry-run"]))
    assert dry.dry_run and dry.migration_id != spec.migration_id
    mapped = build_spec(parse_args([str(manifest), "--network", "VM Network=bridge:br0"]))
    assert mapped.network_map["VM Network"].libvirt_bridge == "br0"


def test_output_dir_overrides_the_manifest_and_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _manifest(tmp_path)
    monkeypatch.chdir(tmp_path)
    spec = build_spec(parse_args([str(manifest), "--output-dir", "elsewhere"]))
    assert spec.output_directory == str(tmp_path / "elsewhere")
    layout = embedded_layout(spec)
    assert layout.allow_input == [(tmp_path / "exports").resolve()]
    assert layout.allow_output == [(tmp_path / "elsewhere").resolve()]


def test_an_invalid_manifest_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(tmp_path, manifest_version="2.0")
    assert main([str(manifest)]) == EXIT_INVALID_INPUT
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "manifest_version" in captured.err and captured.err.startswith("hyper2kvm: error:")


def test_a_bad_default_network_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path)
    assert main([str(manifest), "--default-network", "nowhere"]) == EXIT_INVALID_INPUT
    assert "--default-network" in capsys.readouterr().err


def test_the_remote_control_plane_comes_from_the_environment() -> None:
    assert RemoteSettings.from_env({}) is None
    remote = RemoteSettings.from_env({"H2K_SERVER": "cp:50051", "H2K_INSECURE": "true"})
    assert remote is not None and remote.insecure and remote.server == "cp:50051"
    secure = RemoteSettings.from_env({"H2K_SERVER": "cp:50051"})
    assert secure is not None and not secure.insecure
    with pytest.raises(DirectFailure, match="H2K_TLS_CA") as failure:
        secure.connect()
    assert failure.value.exit_code == EXIT_INVALID_INPUT
