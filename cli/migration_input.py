"""Reading what `h2kctl migrate` is given: an Artifact Manifest v1, an OVA or an OVF.

The readers are pure (:mod:`migration`); this module does the file I/O for them on the host
where h2kctl runs, which is where the exported files are (HyperSDK's conversion host).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from migration.manifest import read_manifest
from migration.model import MigrationProblem, VmDescription
from migration.naming import migration_id_part
from migration.ova import read_ova
from migration.ovf import FileInfo, ovf_references, read_ovf
from migration.wire import spec_from_manifest, vm_to_proto
from protocol.gen.h2k.v1 import migration_pb2

MAX_DOCUMENT = 256 * 1024


def migration_id_for(vm_name: str, document: bytes) -> str:
    """A default migration id: the VM's name (a re-run of the same input is the same
    migration), made safe, with a short content hash when the name had to be changed."""
    safe = migration_id_part(vm_name)
    if safe == vm_name:
        return safe
    return f"{safe}-{hashlib.sha256(document).hexdigest()[:8]}"


def parse_network(option: str) -> tuple[str, migration_pb2.NetworkTarget]:
    """``SOURCE=network:NAME|bridge:NAME[,pod|multus:NAME]`` -> (source, target).

    Raises:
        MigrationProblem: naming the option and the rule.
    """
    source, sep, targets = option.partition("=")
    problem = MigrationProblem(
        [
            f"--network {option!r}: must be SOURCE=network:NAME or SOURCE=bridge:NAME, "
            "optionally followed by ,pod or ,multus:NAME"
        ]
    )
    if not sep or not source or not targets:
        raise problem
    target = migration_pb2.NetworkTarget(kubevirt_network="pod")
    for part in targets.split(","):
        kind, _, name = part.partition(":")
        if kind == "network" and name:
            target.libvirt_network = name
        elif kind == "bridge" and name:
            target.libvirt_bridge = name
        elif kind == "pod" and not name:
            target.kubevirt_network = "pod"
        elif kind == "multus" and name:
            target.kubevirt_network = name
        else:
            raise problem
    if not (target.libvirt_network or target.libvirt_bridge):
        raise problem
    return source, target


def _vm_of_ova(path: Path) -> VmDescription:
    with path.open("rb") as handle:

        def read(offset: int, length: int) -> bytes:
            handle.seek(offset)
            return handle.read(length)

        return read_ova(read, ova_path=str(path.resolve()))


def _vm_of_ovf(path: Path, descriptor: bytes) -> VmDescription:
    files = {}
    for href in ovf_references(descriptor).values():
        candidate = path.parent / href
        if "/" not in href and candidate.is_file():
            files[href] = FileInfo(path=str(candidate.resolve()), size=candidate.stat().st_size)
    return read_ovf(descriptor, files=files)


def read_input(
    file: str,
    *,
    migration_id: str | None,
    output_directory: str,
    networks: dict[str, migration_pb2.NetworkTarget],
) -> migration_pb2.MigrationSpec:
    """The MigrationSpec of one input file (its kind from its content and name).

    Raises:
        MigrationProblem: the input is not readable or not valid; every problem named, each
            prefixed with ``file`` (a wave reads several).
    """
    try:
        return _read_input(file, migration_id, output_directory, networks)
    except MigrationProblem as problem:
        named = [p if p.startswith(f"{file}: ") else f"{file}: {p}" for p in problem.problems]
        raise MigrationProblem(named) from None


def _read_input(
    file: str,
    migration_id: str | None,
    output_directory: str,
    networks: dict[str, migration_pb2.NetworkTarget],
) -> migration_pb2.MigrationSpec:
    path = Path(file)
    try:
        if path.suffix.lower() == ".ova":
            vm = _vm_of_ova(path)
            document, kind = b"", "ova"
        else:
            document = path.read_bytes()
            kind = "ovf" if path.suffix.lower() == ".ovf" else "artifact_manifest"
    except OSError as exc:
        raise MigrationProblem([f"{file}: cannot read: {exc.strerror or exc}"]) from None
    if kind == "artifact_manifest":
        parsed = read_manifest(document, path_exists=os.path.exists)
        name = parsed.vm.name
        spec = spec_from_manifest(
            parsed,
            document.decode("utf-8", errors="replace")[:MAX_DOCUMENT],
            migration_id=migration_id or migration_id_for(name, document),
            output_directory=output_directory,
            network_map=networks,
        )
        if not spec.output_directory:
            raise MigrationProblem([f"{file}: output.directory is not set: give --output-dir"])
        return spec
    if kind == "ovf":
        vm = _vm_of_ovf(path, document)
    if not output_directory:
        raise MigrationProblem([f"{file}: give --output-dir (an OVA/OVF names none)"])
    spec = migration_pb2.MigrationSpec(
        migration_id=migration_id or migration_id_for(vm.name, document or file.encode()),
        vm=vm_to_proto(vm),
        pipeline=migration_pb2.MigrationPipeline(
            repair=True,
            fstab_mode="stabilize-all",
            update_grub=True,
            regen_initramfs=True,
            remove_vmware_tools=True,
            validate=True,
        ),
        output_directory=output_directory,
        output_format="qcow2",
        input_kind=kind,
        input_document=document.decode("utf-8", errors="replace")[:MAX_DOCUMENT],
    )
    for name, target in networks.items():
        spec.network_map[name].CopyFrom(target)
    return spec
