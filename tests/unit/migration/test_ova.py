from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migration.model import MigrationProblem
from migration.ova import Member, UnpackRequired, ova_members, read_ova

DATA = Path(__file__).parent / "data"
DESCRIPTOR = (DATA / "virtualbox-ubuntu.ovf").read_bytes()
DISK = "ubuntu-disk001.vmdk"


def reader(path: Path):
    def read(offset: int, length: int) -> bytes:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(length)

    return read


def build_ova(path: Path, entries: list[tuple[str, bytes]], fmt: int = tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def disk_bytes(n: int = 3000) -> bytes:
    return bytes((i * 7) % 251 for i in range(n))


def assert_offsets(path: Path, members: dict[str, Member], expected: dict[str, bytes]) -> None:
    raw = path.read_bytes()
    for name, content in expected.items():
        member = members[name]
        assert member.size == len(content)
        assert raw[member.offset : member.offset + member.size] == content


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_members_of_a_tarfile_ova(tmp_path: Path, fmt: int) -> None:
    entries = [("ubuntu.ovf", DESCRIPTOR), (DISK, disk_bytes()), ("ubuntu.mf", b"x\n")]
    ova = build_ova(tmp_path / "a.ova", entries, fmt)
    members = ova_members(reader(ova))
    assert list(members) == ["ubuntu.ovf", DISK, "ubuntu.mf"]
    assert all(m.problem == "" for m in members.values())
    assert_offsets(ova, members, dict(entries))


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_via_gnu_longname_and_pax(tmp_path: Path, fmt: int) -> None:
    long_name = "d" * 150 + ".vmdk"
    entries = [("x.ovf", b"<x/>"), (long_name, disk_bytes(700))]
    ova = build_ova(tmp_path / "long.ova", entries, fmt)
    members = ova_members(reader(ova))
    assert long_name in members
    assert_offsets(ova, members, dict(entries))


def test_tar_command_ova_with_dot_slash_names(tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar command")
    work = tmp_path / "src"
    work.mkdir()
    (work / "ubuntu.ovf").write_bytes(DESCRIPTOR)
    (work / DISK).write_bytes(disk_bytes(5000))
    ova = tmp_path / "cmd.ova"
    for fmt in ("gnu", "posix", "ustar"):
        subprocess.run(
            ["tar", f"--format={fmt}", "-cf", str(ova), "./ubuntu.ovf", f"./{DISK}"],
            cwd=work, check=True,
        )  # fmt: skip
        members = ova_members(reader(ova))
        assert list(members) == ["ubuntu.ovf", DISK]
        assert_offsets(ova, members, {DISK: disk_bytes(5000), "ubuntu.ovf": DESCRIPTOR})


def test_sparse_member_is_reported_and_read_ova_asks_to_unpack(tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar command")
    work = tmp_path / "src"
    work.mkdir()
    (work / "ubuntu.ovf").write_bytes(DESCRIPTOR)
    with (work / DISK).open("wb") as f:
        f.write(b"KDMV")
        f.seek(4 * 1024 * 1024)
        f.write(b"end")
    ova = tmp_path / "sparse.ova"
    subprocess.run(
        ["tar", "--format=gnu", "--sparse", "-cf", str(ova), "ubuntu.ovf", DISK],
        cwd=work,
        check=True,
    )
    members = ova_members(reader(ova))
    assert members[DISK].problem == "a sparse tar member"
    with pytest.raises(UnpackRequired) as caught:
        read_ova(reader(ova), ova_path=str(ova))
    assert caught.value.members == [DISK]


def test_read_ova_sets_path_offset_size_and_checksum(tmp_path: Path) -> None:
    content = disk_bytes(4000)
    digest = hashlib.sha256(content).hexdigest()
    entries = [
        ("ubuntu.ovf", DESCRIPTOR),
        (DISK, content),
        ("ubuntu.mf", f"SHA256({DISK})= {digest}\n".encode()),
    ]
    ova = build_ova(tmp_path / "u.ova", entries)
    vm = read_ova(reader(ova), ova_path=str(ova))
    (disk,) = vm.disks
    assert disk.path == str(ova) and disk.size == len(content)
    assert ova.read_bytes()[disk.offset : disk.offset + disk.size] == content
    assert disk.checksum == f"sha256:{digest}"
    assert vm.name == "ubuntu"
    assert not any("not the first member" in n for n in vm.notes)


def test_descriptor_not_first_is_accepted_with_a_note(tmp_path: Path) -> None:
    ova = build_ova(
        tmp_path / "late.ova",
        [(DISK, disk_bytes()), ("ubuntu.ovf", DESCRIPTOR), ("readme.txt", b"hi")],
    )
    vm = read_ova(reader(ova), ova_path=str(ova))
    assert any("not the first member" in n for n in vm.notes)
    assert "OVA member readme.txt" in vm.ignored


def test_missing_disk_member_names_file_id_and_href(tmp_path: Path) -> None:
    ova = build_ova(tmp_path / "nodisk.ova", [("ubuntu.ovf", DESCRIPTOR)])
    with pytest.raises(MigrationProblem) as caught:
        read_ova(reader(ova), ova_path=str(ova))
    assert caught.value.problems == [
        f"ubuntu.ovf: References/File[ovf:id=file1]: ovf:href '{DISK}' is not among the files given"
    ]


def test_compressed_member_and_compressed_ova(tmp_path: Path) -> None:
    ova = build_ova(
        tmp_path / "gz.ova", [("ubuntu.ovf", DESCRIPTOR), (DISK, gzip.compress(disk_bytes()))]
    )
    assert "gzip-compressed" in ova_members(reader(ova))[DISK].problem
    with pytest.raises(UnpackRequired):
        read_ova(reader(ova), ova_path=str(ova))
    packed = tmp_path / "whole.ova.gz"
    packed.write_bytes(gzip.compress(ova.read_bytes()))
    with pytest.raises(MigrationProblem) as caught:
        ova_members(reader(packed))
    assert caught.value.problems == ["OVA: is gzip-compressed; decompress it first"]


def test_no_or_two_descriptors_and_damaged_archives(tmp_path: Path) -> None:
    for name, entries in [
        ("none", [(DISK, b"x")]),
        ("two", [("a.ovf", b"<a/>"), ("b.ovf", b"<b/>")]),
    ]:
        ova = build_ova(tmp_path / f"{name}.ova", entries)
        with pytest.raises(MigrationProblem, match=r"exactly one \.ovf"):
            read_ova(reader(ova), ova_path=str(ova))
    ova = build_ova(tmp_path / "t.ova", [("ubuntu.ovf", DESCRIPTOR), (DISK, disk_bytes(9000))])
    truncated = tmp_path / "cut.ova"
    truncated.write_bytes(ova.read_bytes()[:4000])
    with pytest.raises(MigrationProblem):
        read_ova(reader(truncated), ova_path=str(truncated))
    junk = tmp_path / "junk.ova"
    junk.write_bytes(b"\x01" * 2048)
    with pytest.raises(MigrationProblem, match="bad checksum"):
        ova_members(reader(junk))
    (tmp_path / "empty.ova").write_bytes(b"")
    with pytest.raises(MigrationProblem, match="is empty"):
        ova_members(reader(tmp_path / "empty.ova"))


def test_huge_member_size_in_base_256(tmp_path: Path) -> None:
    # A GNU header for a 9 GiB member, without its data: the size must be read, not refused.
    info = tarfile.TarInfo("big.vmdk")
    info.size = 9 * 2**30
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    members = ova_members(lambda offset, length: (header + b"\0" * 1024)[offset : offset + length]
                          if offset < len(header) else b"\0" * length)  # fmt: skip
    assert members["big.vmdk"].size == 9 * 2**30


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_raise_only_migration_problem(raw: bytes) -> None:
    try:
        read_ova(lambda offset, length: raw[offset : offset + length], ova_path="/x.ova")
    except MigrationProblem as problem:
        assert problem.problems
