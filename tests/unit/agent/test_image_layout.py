"""The metadata walks that prove a source whole, on images written from the formats' own
layouts (tests/support/layouts.py): whole ones pass, cut ones are refused naming the table
entry that points past the end, differencing ones are refused naming the parent field."""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import proc
from agent.disk import qemu_img
from agent.disk.image_safety import check_qcow2, safe_input, vmdk_descriptor, vmdk_extents
from agent.disk.layout import ImageBytes, Where, check_whole, vmdk
from agent.disk.layout import common as layout_common
from agent.disk.layout.vhdx import crc32c
from agent.errors import InvalidImage, ToolFailed, UnsafeImage
from agent.paths import PathPolicy, pinned_input
from tests.support import layouts

MiB = layouts.MiB
SIZE = 8 * MiB
Builder = Callable[[int, layouts.Blocks], bytes]

FORMATS: dict[str, tuple[Builder, int]] = {
    "qcow2": (layouts.qcow2, layouts.QCOW2_BLOCK),
    "vmdk": (layouts.vmdk_sparse, layouts.VMDK_BLOCK),
    "vdi": (layouts.vdi, layouts.VDI_BLOCK),
    "vpc": (layouts.vhd_dynamic, layouts.VHD_BLOCK),
    "vhdx": (layouts.vhdx, layouts.VHDX_BLOCK),
}


def _blocks(block: int) -> layouts.Blocks:
    rng = random.Random(block)
    return {i: rng.randbytes(block) for i in (0, 1, SIZE // block - 1)}


def _walk(fmt: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"disk.{fmt}"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        image = ImageBytes(fd, len(data))
        if fmt == "vmdk":
            vmdk.check_sparse(image, Where(path))
        else:
            check_whole(fmt, image, Where(path))
    finally:
        os.close(fd)


@pytest.fixture(params=sorted(FORMATS))
def whole(request: pytest.FixtureRequest) -> Iterator[tuple[str, bytes]]:
    build, block = FORMATS[request.param]
    yield request.param, build(SIZE, _blocks(block))


def test_a_whole_image_passes(whole: tuple[str, bytes], tmp_path: Path) -> None:
    fmt, data = whole
    _walk(fmt, data, tmp_path)


@pytest.mark.parametrize("cut", ["half", "one byte"])
def test_a_cut_image_is_refused_naming_the_entry_past_the_end(
    whole: tuple[str, bytes], cut: str, tmp_path: Path
) -> None:
    fmt, data = whole
    short = data[: len(data) // 2] if cut == "half" else data[:-1]
    with pytest.raises(InvalidImage) as refused:
        _walk(fmt, short, tmp_path)
    message = refused.value.message
    ends = f"the file ends at {layout_common.human(len(short))}"
    assert ends in message or "no footer" in message
    assert "looks truncated" in message
    assert refused.value.code == "INVALID_IMAGE"


def test_the_message_says_which_grain_table_entry_and_where_the_file_ends(
    tmp_path: Path,
) -> None:
    data = layouts.vmdk_sparse(SIZE, _blocks(layouts.VMDK_BLOCK))
    with pytest.raises(
        InvalidImage,
        match=r"grain table 0 entry 127 points to offset .* the "
        r"file ends at .* — the file looks truncated",
    ):
        _walk("vmdk", data[: len(data) - 64 * 1024], tmp_path)


def test_a_table_itself_past_the_end_is_refused(tmp_path: Path) -> None:
    data = bytearray(layouts.qcow2(SIZE, _blocks(layouts.QCOW2_BLOCK)))
    struct.pack_into(">Q", data, 40, len(data) + 4096)  # the L1 table's offset
    with pytest.raises(InvalidImage, match="the qcow2 L1 table points to offset"):
        _walk("qcow2", bytes(data), tmp_path)


def test_a_vhd_whose_footer_is_missing_is_refused(tmp_path: Path) -> None:
    data = layouts.vhd_dynamic(SIZE, {})
    with pytest.raises(InvalidImage, match=r"no footer \(conectix\) in its last 512 bytes"):
        _walk("vpc", data[:-512], tmp_path)


def test_a_fixed_vhd_shorter_than_its_footer_says_is_refused(tmp_path: Path) -> None:
    footer = layouts.vhd_footer(SIZE, 2, 0xFFFFFFFFFFFFFFFF)
    _walk("vpc", bytes(SIZE) + footer, tmp_path)
    with pytest.raises(InvalidImage, match=r"fixed VHD.s footer says 8\.0 MiB"):
        _walk("vpc", bytes(SIZE // 2) + footer, tmp_path)


@pytest.mark.parametrize(
    ("fmt", "data", "field"),
    [
        (
            "vpc",
            layouts.vhd_dynamic(SIZE, {}, parent="C:\\VMs\\base.vhd"),
            r"footer disk type 4\) .*parent unicode name 'C:\\\\VMs\\\\base.vhd'",
        ),
        (
            "vhdx",
            layouts.vhdx(SIZE, {}, parent="base.vhdx"),
            r"HasParent, parent locator .*relative_path='base.vhdx'",
        ),
        (
            "vdi",
            layouts.vdi(SIZE, {}, image_type=4, link=b"\x01" * 16),
            r"VDI differencing image \(image type 4\) .*uuidLinkage 01010101-",
        ),
    ],
    ids=["vhd", "vhdx", "vdi"],
)
def test_a_differencing_disk_is_refused_naming_its_parent_field(
    fmt: str, data: bytes, field: str, tmp_path: Path
) -> None:
    with pytest.raises(UnsafeImage, match=field):
        _walk(fmt, data, tmp_path)


def test_a_vmdk_with_a_parent_cid_is_refused_naming_it(tmp_path: Path) -> None:
    data = layouts.vmdk_sparse(SIZE, {}, parent_cid="9f8e7d6c")
    path = tmp_path / "delta.vmdk"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        descriptor = vmdk_descriptor(ImageBytes(fd, len(data)), path)
    finally:
        os.close(fd)
    with pytest.raises(UnsafeImage, match="parentCID=9f8e7d6c, not ffffffff"):
        vmdk_extents(descriptor, path)
    assert vmdk_extents(descriptor.replace("9f8e7d6c", "ffffffff"), path)


def test_a_large_file_named_vmdk_is_not_called_a_large_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "raw.vmdk"
    path.write_bytes(b"\xeb\x63\x90" + bytes(2 * MiB))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(InvalidImage) as refused:
            vmdk_descriptor(ImageBytes(fd, 2 * MiB + 3), path)
    finally:
        os.close(fd)
    assert "is not a VMDK: it has no sparse extent header (KDMV)" in refused.value.message
    assert "descriptor larger" not in refused.value.message


def test_a_qcow2_cut_inside_its_version_3_header_is_refused_as_truncated(tmp_path: Path) -> None:
    # Found by the property test: 100 bytes of a v3 header made the backing-file check raise
    # struct.error instead of refusing the image.
    path = tmp_path / "cut.qcow2"
    path.write_bytes(layouts.qcow2(SIZE, _blocks(layouts.QCOW2_BLOCK))[:100])

    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(InvalidImage, match="looks truncated"):
            check_qcow2(ImageBytes(fd, 100), path)
    finally:
        os.close(fd)


def test_a_vhdx_with_a_log_to_replay_is_refused(tmp_path: Path) -> None:
    data = bytearray(layouts.vhdx(SIZE, {}))
    for header in (64 * 1024, 128 * 1024):
        data[header + 48 : header + 64] = b"\x07" * 16  # the log GUID
        struct.pack_into("<I", data, header + 4, 0)
        struct.pack_into("<I", data, header + 4, crc32c(bytes(data[header : header + 4096])))
    with pytest.raises(InvalidImage, match=r"log GUID set: .* only a writable open can replay"):
        _walk("vhdx", bytes(data), tmp_path)


def test_a_qcow2_marked_corrupt_is_refused(tmp_path: Path) -> None:
    data = bytearray(layouts.qcow2(SIZE, {}))
    struct.pack_into(">Q", data, 72, 2)
    with pytest.raises(InvalidImage, match="marked this qcow2 image corrupt"):
        _walk("qcow2", bytes(data), tmp_path)


def test_crc32c_matches_the_published_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize(
    ("exit_code", "stderr", "kind", "says"),
    [
        (1, "qemu-img: Could not open 'x': Invalid footer", InvalidImage, "an image problem"),
        (1, "qemu-img: Could not open 'x': Input/output error", ToolFailed, "a node problem"),
        (1, "qemu-img: error while reading: No space left on device", ToolFailed, "node"),
        (-9, "", ToolFailed, "killed by signal 9"),
        (139, "Segmentation fault", ToolFailed, "killed by signal 11"),
        (127, "No such file or directory: 'qemu-img'", ToolFailed, "a node problem"),
    ],
)
def test_qemu_img_failures_are_classed_image_or_node(
    exit_code: int, stderr: str, kind: type, says: str
) -> None:
    failure = qemu_img.classify_failure(
        "qemu-img info /in/x", proc.CommandFailed(["qemu-img"], exit_code, stderr)
    )
    assert type(failure) is kind
    assert says in failure.message


def test_a_timed_out_qemu_img_is_a_node_problem() -> None:
    failure = qemu_img.classify_failure(
        "qemu-img info /in/x", proc.CommandTimeout(["qemu-img"], 60)
    )
    assert isinstance(failure, ToolFailed)
    assert "a node problem" in failure.message


def _descriptor(extents: list[str]) -> str:
    return "\n".join(
        [
            "# Disk DescriptorFile",
            "version=1",
            "CID=1a2b3c4d",
            "parentCID=ffffffff",
            'createType="twoGbMaxExtentSparse"',
            "",
            *extents,
            "",
        ]
    )


def _safe(directory: Path, name: str) -> None:
    policy = PathPolicy([directory], [directory])
    with (
        pinned_input(policy, directory / name) as pinned,
        safe_input(policy, pinned, "vmdk", directory / ".scratch"),
    ):
        pass


def test_a_split_vmdk_names_the_extent_file_that_is_cut(tmp_path: Path) -> None:
    extent = layouts.vmdk_sparse(SIZE, _blocks(layouts.VMDK_BLOCK))
    sectors = SIZE // 512
    (tmp_path / "d-s001.vmdk").write_bytes(extent)
    (tmp_path / "d-s002.vmdk").write_bytes(extent[: len(extent) // 2])
    (tmp_path / "d.vmdk").write_text(
        _descriptor([f'RW {sectors} SPARSE "d-s001.vmdk"', f'RW {sectors} SPARSE "d-s002.vmdk"'])
    )
    with pytest.raises(InvalidImage, match=r"extent 2 \(d-s002.vmdk\): grain table 0 entry"):
        _safe(tmp_path, "d.vmdk")
    (tmp_path / "d-s002.vmdk").write_bytes(extent)
    _safe(tmp_path, "d.vmdk")


def test_a_flat_extent_shorter_than_its_descriptor_line_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d-flat.vmdk").write_bytes(bytes(SIZE - 512))
    (tmp_path / "d.vmdk").write_text(_descriptor([f'RW {SIZE // 512} FLAT "d-flat.vmdk" 0']))
    with pytest.raises(InvalidImage, match=r"extent 1 \(d-flat.vmdk\): the flat extent's"):
        _safe(tmp_path, "d.vmdk")
