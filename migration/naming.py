"""Names of what a migration writes: the output files, and the VM's name on KubeVirt.

A VM's name becomes part of file names (``<vm>.qcow2``, ``<vm>.xml``) and a libvirt domain
name, so :func:`check_vm_name` refuses anything that could escape the output directory or
confuse a shell or a log: path separators, ``..``, control characters, a leading ``.`` or ``-``.
KubeVirt needs more (a DNS-1123 label), which :func:`kubevirt_name` derives deterministically.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from migration.model import DiskOutput, MigrationProblem, VmDescription

# A migration id is at most this long when derived from a VM name, so that its jobs' ids
# (``<id>.disk.<disk id of up to 64>``) fit the v1 job_id limit of 128 characters.
MAX_ID_NAME_PART = 45
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# The longest file name written for a VM is "<vm>-<disk id>.qcow2"; file systems cap a name at
# 255 bytes, so the VM name and a disk id each get at most 100 (UTF-8 bytes).
MAX_NAME_BYTES = 100
# A DNS-1123 label (RFC 1123): KubeVirt uses the VM's name as a hostname and as a label value.
MAX_KUBEVIRT_NAME = 63
DISK_FORMATS = ("qcow2", "raw")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9]+")
_HASH_CHARS = 6


@dataclass(frozen=True)
class OutputNames:
    """The file names (not paths) a migration of one VM writes."""

    disks: tuple[str, ...]  # in the VM's disk order: the boot disk first
    domain_xml: str
    kubevirt_yaml: str
    report_json: str


def _component_problems(value: str, what: str) -> list[str]:
    """Why ``value`` cannot be one component of a file name (empty: it can)."""
    if not value:
        return [f"{what}: must not be empty"]
    problems = []
    if "/" in value:
        problems.append(f"{what}: {value!r} must not contain '/'")
    if ".." in value:
        problems.append(f"{what}: {value!r} must not contain '..'")
    if any(unicodedata.category(char) == "Cc" for char in value):
        problems.append(f"{what}: {value!r} must not contain NUL or control characters")
    if value[0] in ".-":
        problems.append(f"{what}: {value!r} must not start with '.' or '-'")
    if value != value.strip():
        problems.append(f"{what}: {value!r} must not start or end with white space")
    if len(value.encode()) > MAX_NAME_BYTES:
        problems.append(f"{what}: {value!r} is longer than {MAX_NAME_BYTES} bytes")
    return problems


def check_vm_name(name: str) -> None:
    """Refuse a VM name that cannot be used in output file names and as a libvirt domain name.

    Raises:
        MigrationProblem: naming each rule the name breaks.
    """
    problems = _component_problems(name, "name")
    if problems:
        raise MigrationProblem(problems)


def kubevirt_name(name: str) -> str:
    """A DNS-1123 label for ``name``, the same every time for the same name.

    Lower-cases, drops accents (``é`` -> ``e``), turns every run of other characters into one
    ``-`` and trims ``-`` at both ends. A result longer than 63 characters is cut and ends with
    a short hash of the whole name, so two long names sharing a prefix stay apart.

    Raises:
        MigrationProblem: when no letter or digit remains (``"日本"``, ``"--"``).
    """
    decomposed = unicodedata.normalize("NFKD", name.lower())
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    label = _NOT_LABEL_CHARS.sub("-", ascii_only).strip("-")
    if not label:
        raise MigrationProblem(
            [f"name: {name!r} has no letter or digit to make a KubeVirt (DNS-1123) name of"]
        )
    if len(label) > MAX_KUBEVIRT_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARS]
        label = label[: MAX_KUBEVIRT_NAME - _HASH_CHARS - 1].rstrip("-") + "-" + digest
    if not _DNS_LABEL.match(label):  # a bug here, not a bad input
        raise AssertionError(f"kubevirt_name made {label!r}, not a DNS-1123 label")
    return label


def disk_output_names(vm: VmDescription, fmt: str) -> list[str]:
    """File names of the VM's converted disks, in disk order.

    The boot disk is ``<vm>.<fmt>``, every other ``<vm>-<disk id>.<fmt>``.

    Raises:
        MigrationProblem: for a bad VM name or disk id, an unknown format, or two disks
            that would get the same name.
    """
    problems = _component_problems(vm.name, "name")
    if fmt not in DISK_FORMATS:
        problems.append(f"format: {fmt!r} is not one of {', '.join(DISK_FORMATS)}")
    if not vm.disks:
        problems.append("disks: the VM has no disk")
    for i, disk in enumerate(vm.disks[1:], start=1):
        problems += _component_problems(disk.id, f"disks[{i}].id")
    if problems:
        raise MigrationProblem(problems)
    names = [f"{vm.name}.{fmt}"] + [f"{vm.name}-{disk.id}.{fmt}" for disk in vm.disks[1:]]
    seen: dict[str, int] = {}
    for i, file_name in enumerate(names):
        if file_name in seen:
            problems.append(
                f"disks[{i}].id: {vm.disks[i].id!r} gives {file_name!r}, "
                f"the same file as disks[{seen[file_name]}]"
            )
        seen.setdefault(file_name, i)
    if problems:
        raise MigrationProblem(problems)
    return names


def output_names(vm: VmDescription, fmt: str) -> OutputNames:
    """Every file name a migration of ``vm`` writes (see :func:`disk_output_names`)."""
    disks = disk_output_names(vm, fmt)
    return OutputNames(
        disks=tuple(disks),
        domain_xml=f"{vm.name}.xml",
        kubevirt_yaml=f"{vm.name}.kubevirt.yaml",
        report_json=f"{vm.name}.report.json",
    )


def plan_disk_outputs(vm: VmDescription, fmt: str, directory: str) -> tuple[DiskOutput, ...]:
    """Where each disk of ``vm`` is to be written in ``directory`` (nothing is touched)."""
    names = disk_output_names(vm, fmt)
    return tuple(
        DiskOutput(disk_id=disk.id, path=posixpath.join(directory, name), format=fmt, name=name)
        for disk, name in zip(vm.disks, names, strict=True)
    )


def output_stem(output: DiskOutput) -> str:
    """The output's file name without its format extension (``web.qcow2`` -> ``web``)."""
    suffix = f".{output.format}"
    return output.name[: -len(suffix)] if output.name.endswith(suffix) else output.name


def kubevirt_volume_names(outputs: Sequence[DiskOutput]) -> list[str]:
    """The DataVolume/PVC name of each output: :func:`kubevirt_name` of its file stem.

    Raises:
        MigrationProblem: when two outputs map to the same name.
    """
    names = [kubevirt_name(output_stem(output)) for output in outputs]
    problems = [
        f"outputs[{i}]: {outputs[i].name!r} gives the KubeVirt name {name!r}, "
        f"as outputs[{names.index(name)}] does"
        for i, name in enumerate(names)
        if names.index(name) != i
    ]
    if problems:
        raise MigrationProblem(problems)
    return names


def migration_id_part(vm_name: str) -> str:
    """The VM's name made fit to start a migration id: characters other than letters, digits,
    ``.``, ``_`` and ``-`` become ``-``, it starts and ends with a letter or digit, it is cut
    to :data:`MAX_ID_NAME_PART`; a name with nothing usable left becomes ``vm``."""
    safe = _ID_UNSAFE.sub("-", vm_name)
    return safe.lstrip("._-")[:MAX_ID_NAME_PART].rstrip("._-") or "vm"
