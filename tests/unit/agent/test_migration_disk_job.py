"""parameters.migration as the agent re-validates it, and the byte-range plumbing (pure)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import pytest

from agent.disk.image_safety import ImageBytes, sniff_format, vmdk_descriptor
from agent.disk.qemu_img import ByteRange, ImageInfo, check_safe, source_filename
from agent.errors import InvalidSpec, UnsafeImage
from agent.ops.base import JobContext
from agent.ops.convert import output_path
from agent.ops.disk_job import migration_parameters, source_range
from agent.paths import PathPolicy
from agent.progress import ProgressReporter
from protocol.spec import parse_spec

MIGRATION = {"migration_id": "mig-1", "disk_id": "disk-0", "output_name": ".vm.qcow2.h2k-mig-1"}


def _ctx(tmp_path: Path, operation: str = "convert", **parameters: Any) -> JobContext:
    doc = {
        "job_id": "job-1",
        "operation": operation,
        "image": {"path": str(tmp_path / "vm.ova"), "format": "vmdk"},
        "artifacts": {"output_path": str(tmp_path)},
        "audit": {"requested_by": "tests"},
        "parameters": parameters,
    }
    return JobContext(
        spec=parse_spec(doc),
        input_path=tmp_path / "vm.ova",
        output_dir=tmp_path,
        state_dir=tmp_path / "state",
        policy=PathPolicy([tmp_path], [tmp_path]),
        progress=cast(ProgressReporter, None),  # never reached by these functions
    )


def _refusal(ctx: JobContext) -> str:
    with pytest.raises(InvalidSpec) as caught:
        migration_parameters(ctx)
    return caught.value.message


def test_a_job_outside_a_migration_has_none(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    assert migration_parameters(ctx) is None
    assert output_path(ctx, "qcow2") == tmp_path / "vm.qcow2"


def test_output_name_replaces_the_input_stem(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, migration=MIGRATION)
    assert output_path(ctx, "qcow2") == tmp_path / ".vm.qcow2.h2k-mig-1"


def test_malformed_parameters_are_an_invalid_spec_naming_the_field(tmp_path: Path) -> None:
    message = _refusal(_ctx(tmp_path, migration={**MIGRATION, "output_name": "../x"}))
    assert "parameters.migration.output_name" in message
    message = _refusal(_ctx(tmp_path, migration={**MIGRATION, "source_offset": -1}))
    assert "parameters.migration.source_offset" in message
    assert "parameters.migration" in _refusal(_ctx(tmp_path, migration="yes"))


def test_inspect_refuses_any_migration_object(tmp_path: Path) -> None:
    message = _refusal(_ctx(tmp_path, "inspect", migration=MIGRATION))
    assert message.startswith("parameters.migration:")


def test_convert_refuses_attach_outputs(tmp_path: Path) -> None:
    attached = [{"disk_id": "d1", "path": str(tmp_path / "d1.qcow2"), "format": "qcow2"}]
    message = _refusal(_ctx(tmp_path, migration={**MIGRATION, "attach_outputs": attached}))
    assert "parameters.migration.attach_outputs" in message


def test_a_repair_refuses_verify_content(tmp_path: Path) -> None:
    message = _refusal(
        _ctx(tmp_path, "offline_fix", migration={**MIGRATION, "verify_content": True})
    )
    assert "parameters.migration.verify_content" in message
    assert migration_parameters(
        _ctx(tmp_path, "convert", migration={**MIGRATION, "verify_content": True})
    )


@pytest.mark.parametrize("option", ["dry_run", "in_place"])
def test_a_repair_of_a_byte_range_works_on_a_copy_only(tmp_path: Path, option: str) -> None:
    ranged = {**MIGRATION, "source_offset": 512}
    message = _refusal(_ctx(tmp_path, "offline_fix", migration=ranged, **{option: True}))
    assert f"parameters.{option}" in message
    assert migration_parameters(_ctx(tmp_path, "offline_fix", migration=ranged)) is not None


def test_source_range(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, migration={**MIGRATION, "source_offset": 1536, "source_size": 1000})
    assert source_range(migration_parameters(ctx), 4096) == ByteRange(1536, 1000)
    to_the_end = _ctx(tmp_path, migration={**MIGRATION, "source_offset": 1536})
    assert source_range(migration_parameters(to_the_end), 4096) == ByteRange(1536, 2560)
    assert source_range(migration_parameters(_ctx(tmp_path, migration=MIGRATION)), 4096) is None


@pytest.mark.parametrize(
    ("offset", "size", "field"),
    [(4096, None, "source_offset"), (9000, 1, "source_offset"), (1536, 2561, "source_size")],
)
def test_a_range_beyond_the_end_of_the_file_is_refused(
    tmp_path: Path, offset: int, size: int | None, field: str
) -> None:
    migration: dict[str, Any] = {**MIGRATION, "source_offset": offset}
    if size is not None:
        migration["source_size"] = size
    params = migration_parameters(_ctx(tmp_path, migration=migration))
    with pytest.raises(InvalidSpec, match=rf"parameters\.migration\.{field}: .*4096 bytes"):
        source_range(params, 4096)


def test_the_range_filename_wraps_the_pinned_file_in_a_raw_window() -> None:
    pinned = Path("/proc/1/fd/7")
    assert source_filename(pinned, None) == pinned
    name = source_filename(pinned, ByteRange(1536, 4096))
    assert isinstance(name, str) and name.startswith("json:")
    assert json.loads(name.removeprefix("json:")) == {
        "file": {
            "driver": "raw",
            "offset": 1536,
            "size": 4096,
            "file": {"driver": "file", "filename": "/proc/1/fd/7"},
        }
    }


def _info_with_extents(*names: str) -> ImageInfo:
    doc = {
        "format": "vmdk",
        "virtual-size": 1 << 20,
        "format-specific": {"type": "vmdk", "data": {"extents": [{"filename": n} for n in names]}},
    }
    return ImageInfo.from_json(doc, "json:{}")


def test_a_ranged_image_may_only_report_its_own_range_as_extent(tmp_path: Path) -> None:
    node = ByteRange(1536, 4096).node(Path("/proc/1/fd/7"))
    own = "json:" + json.dumps(dict(reversed(list(node.items()))))  # qemu's key order differs
    policy = PathPolicy([tmp_path], [tmp_path])
    check_safe(_info_with_extents(own), tmp_path / "vm.ova", policy, node)
    other = "json:" + json.dumps({**node, "offset": 0})
    for extent in (other, str(tmp_path / "vm.ova"), "/etc/shadow"):
        with pytest.raises(UnsafeImage, match="single-file image"):
            check_safe(_info_with_extents(extent), tmp_path / "vm.ova", policy, node)


def _file_with(tmp_path: Path, parts: list[bytes]) -> int:
    path = tmp_path / "container"
    path.write_bytes(b"".join(parts))
    return os.open(path, os.O_RDONLY)


def test_headers_are_read_at_the_start_of_the_range(tmp_path: Path) -> None:
    qcow2_header = b"QFI\xfb" + bytes(508)
    fd = _file_with(tmp_path, [b"ustar tar header".ljust(1536, b"\0"), qcow2_header])
    try:
        assert sniff_format(fd, 1536 + 512) is None
        assert sniff_format(fd, 512, start=1536) == "qcow2"
        window = ImageBytes(fd, 100, 1536)
        assert window.read(0, 4) == b"QFI\xfb"
        assert len(window.read(50, 1000)) == 50  # nothing past the end of the range
        assert window.read(100, 10) == b""
    finally:
        os.close(fd)


def test_a_vhd_footer_is_looked_for_at_the_end_of_the_range(tmp_path: Path) -> None:
    footer = b"conectix".ljust(512, b"\0")
    fd = _file_with(tmp_path, [bytes(1024), footer, b"trailing tar padding".ljust(1024, b"\0")])
    try:
        assert sniff_format(fd, 2560) is None
        assert sniff_format(fd, 1536, start=0) == "vpc"
    finally:
        os.close(fd)


def test_a_text_vmdk_descriptor_in_a_range_ends_at_the_range(tmp_path: Path) -> None:
    descriptor = b'# Disk DescriptorFile\nRW 8 SPARSE "disk-s001.vmdk"\n'
    fd = _file_with(tmp_path, [bytes(512), descriptor, b'RW 8 FLAT "/etc/shadow" 0\n'])
    try:
        text = vmdk_descriptor(ImageBytes(fd, len(descriptor), 512), Path("vm.ova"))
        assert "disk-s001.vmdk" in text and "/etc/shadow" not in text
    finally:
        os.close(fd)
