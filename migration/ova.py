"""Find the descriptor and disks inside an OVA (a tar archive) without unpacking it.

:func:`ova_members` walks tar headers through a ``read(offset, length) -> bytes`` callable, so
the module does no I/O of its own. It understands ustar and GNU tar as ``tar`` and ovftool
write them: GNU long names (``L``), pax headers (``x``, ``g``: ``path`` and ``size``) and
base-256 sizes for members over 8 GiB. Members that cannot be read in place (sparse, or whose
bytes look compressed) are listed with ``problem`` set; :func:`read_ova` raises
:class:`UnpackRequired` when a disk is one of them, so the caller can unpack instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from migration.model import MigrationProblem, VmDescription, VmDisk
from migration.ovf import FileInfo, ovf_references, read_ovf

Read = Callable[[int, int], bytes]
BLOCK = 512
MAX_HEADER_DATA = 1024 * 1024  # a long name or pax header bigger than this is refused
MAX_DESCRIPTOR = 16 * 1024 * 1024
_COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bzip2",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_MANIFEST_LINE = re.compile(r"SHA256\((?P<name>[^)]+)\)\s*=\s*(?P<hex>[0-9a-fA-F]{64})\s*")


@dataclass(frozen=True)
class Member:
    """A file inside the OVA: its data starts at ``offset`` and is ``size`` bytes long.

    ``problem`` is "" when the data can be read in place, else why not (sparse, compressed,
    a link, ...)."""

    name: str
    offset: int
    size: int
    problem: str = ""


class UnpackRequired(MigrationProblem):
    """A disk in the OVA cannot be read in place; ``members`` names them (unpack instead)."""

    def __init__(self, problems: list[str], members: list[str]) -> None:
        super().__init__(problems)
        self.members = members


def _number(field: bytes, where: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256, for sizes of 8 GiB and more
        value = int.from_bytes(field[1:], "big")
        return value if not field[0] & 0x40 else value - (1 << (8 * len(field) - 2))
    text = field.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise MigrationProblem([f"{where}: tar header number {text!r} is not octal"]) from None


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _number(header[148:156], "tar header checksum")
    except MigrationProblem:
        return False
    blanked = header[:148] + b" " * 8 + header[156:]
    unsigned = sum(blanked)
    signed = sum(b - 256 if b > 127 else b for b in blanked)
    return stored in (unsigned, signed)


def _pax_records(data: bytes, where: str) -> dict[str, str]:
    """``"<len> key=value\\n"`` records of a pax header."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] not in (b"\0", b""):  # fmt: skip
        space = data.find(b" ", pos)
        length_text = data[pos:space]
        if space < 0 or not length_text.isdigit() or int(length_text) <= space - pos:
            raise MigrationProblem([f"{where}: malformed pax header"])
        record = data[space + 1 : pos + int(length_text)]
        key, sep, value = record.rstrip(b"\n").partition(b"=")
        if not sep:
            raise MigrationProblem([f"{where}: malformed pax record"])
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += int(length_text)
    return records


def _read_exactly(read: Read, offset: int, length: int, where: str) -> bytes:
    data = read(offset, length)
    if len(data) != length:
        raise MigrationProblem([f"{where}: the archive ends inside a member (truncated?)"])
    return data


def _name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0":  # POSIX ustar: a prefix may hold leading directories
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _data_problem(read: Read, offset: int, size: int) -> str:
    head = read(offset, 6) if size >= 6 else b""
    for magic, kind in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            return f"its data looks {kind}-compressed"
    return ""


def _compressed(head: bytes) -> str:
    for magic, kind in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            return f"OVA: is {kind}-compressed; decompress it first"
    return ""


def ova_members(read: Read) -> dict[str, Member]:
    """Every member of the tar archive ``read`` gives access to, by name, in archive order.

    Raises:
        MigrationProblem: not a tar archive (a compressed OVA is reported as such), a bad
        header checksum, a truncated archive, or a name given twice.
    """
    members: dict[str, Member] = {}
    offset = 0
    pending: dict[str, str] = {}  # from L and x headers, for the next member
    global_pax: dict[str, str] = {}
    while True:
        where = f"tar header at byte {offset}"
        header = read(offset, BLOCK)
        if len(header) < BLOCK or header == b"\0" * BLOCK:
            if offset == 0:
                raise MigrationProblem([_compressed(header) or "OVA: is empty"])
            return members
        if not _checksum_ok(header):
            if offset == 0 and _compressed(header):
                raise MigrationProblem([_compressed(header)])
            raise MigrationProblem([f"{where}: bad checksum (not a tar archive, or damaged)"])
        kind = header[156:157]
        size = _number(header[124:136], where)
        data_at = offset + BLOCK
        following = data_at + -(-size // BLOCK) * BLOCK
        if kind in (b"L", b"x", b"g"):
            if size > MAX_HEADER_DATA:
                raise MigrationProblem([f"{where}: extended header of {size} bytes is too big"])
            data = _read_exactly(read, data_at, size, where)
            if kind == b"L":
                pending["path"] = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            else:
                (pending if kind == b"x" else global_pax).update(_pax_records(data, where))
            offset = following
            continue
        fields = {**global_pax, **pending}
        pending = {}
        name = _clean(fields.get("path") or _name(header))
        if "size" in fields:
            if not fields["size"].isdigit():
                raise MigrationProblem([f"{where}: pax size {fields['size']!r} is not a number"])
            size = int(fields["size"])
            following = data_at + -(-size // BLOCK) * BLOCK
        problem = ""
        if kind == b"S" or any(key.startswith("GNU.sparse.") for key in fields):
            problem = "a sparse tar member"
        elif kind in (b"1", b"2"):
            problem = f"a {'hard' if kind == b'1' else 'symbolic'} link, not a file"
        elif kind not in (b"0", b"\0", b"7", b"5"):
            problem = f"tar member type {kind!r} is not a plain file"
        elif kind != b"5":
            problem = _data_problem(read, data_at, size)
        if kind != b"5" and name:
            if name in members:
                raise MigrationProblem([f"OVA: {name!r} is in the archive more than once"])
            members[name] = Member(name=name, offset=data_at, size=size, problem=problem)
        offset = following


def _sha256_from_manifest(read: Read, members: dict[str, Member]) -> dict[str, str]:
    digests: dict[str, str] = {}
    for member in members.values():
        if member.name.lower().endswith(".mf") and not member.problem and member.size < 1 << 20:
            text = _read_exactly(read, member.offset, member.size, member.name)
            for line in text.decode("utf-8", "replace").splitlines():
                if found := _MANIFEST_LINE.fullmatch(line.strip()):
                    digests[found["name"].strip()] = "sha256:" + found["hex"].lower()
    return digests


def read_ova(read: Read, *, ova_path: str) -> VmDescription:
    """Describe the VM in the OVA at ``ova_path`` (read through ``read``).

    Each disk's ``path`` is ``ova_path`` with ``offset``/``size`` of its member; a SHA256 line
    of the OVA's .mf manifest becomes the disk's ``checksum`` (the agent hashes the member
    and refuses a mismatch).

    Raises:
        UnpackRequired: a disk's member is sparse, compressed or a link.
        MigrationProblem: no or several .ovf descriptors, or anything :func:`read_ovf` refuses
            (each of those problems prefixed with the descriptor's member name).
    """
    members = ova_members(read)
    descriptors = [m for m in members.values() if m.name.lower().endswith(".ovf")]
    if len(descriptors) != 1:
        raise MigrationProblem(
            [f"OVA: must hold exactly one .ovf descriptor, not {len(descriptors)}"]
        )
    descriptor = descriptors[0]
    if descriptor.size > MAX_DESCRIPTOR or descriptor.problem:
        raise MigrationProblem([f"OVA: {descriptor.name}: {descriptor.problem or 'too big'}"])
    text = _read_exactly(read, descriptor.offset, descriptor.size, descriptor.name)
    with _named(descriptor.name):
        hrefs = ovf_references(text).values()
    refused = [href for href in hrefs if href in members and members[href].problem]
    if refused:
        raise UnpackRequired(
            [f"OVA: {h}: {members[h].problem}; unpack the OVA to read it" for h in refused],
            refused,
        )
    files = {
        m.name: FileInfo(path=ova_path, offset=m.offset, size=m.size)
        for m in members.values()
        if not m.problem
    }
    with _named(descriptor.name):
        vm = read_ovf(text, files=files)
    notes = list(vm.notes)
    if next(iter(members)) != descriptor.name:
        notes.append(
            f"{descriptor.name} is not the first member of the OVA (the OVF spec wants it first)"
        )
    used = {descriptor.name, *hrefs}
    digests = _sha256_from_manifest(read, members)
    ignored = [
        *vm.ignored,
        *(f"OVA member {n}" for n in members if n not in used and not n.lower().endswith(".mf")),
    ]
    disks = tuple(
        replace(d, checksum=d.checksum or digests.get(_member_of(d, members), "")) for d in vm.disks
    )
    return replace(vm, disks=disks, notes=tuple(notes), ignored=tuple(ignored))


@contextmanager
def _named(member: str) -> Iterator[None]:
    """Prefix the problems raised inside with the OVA member they are about."""
    try:
        yield
    except MigrationProblem as problem:
        raise MigrationProblem([f"{member}: {p}" for p in problem.problems]) from None


def _member_of(disk: VmDisk, members: dict[str, Member]) -> str:
    return next((m.name for m in members.values() if m.offset == disk.offset), "")
