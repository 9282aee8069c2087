"""hyper2kvm direct mode, the pure parts: exit codes, migration ids, stdout lines, the spec's
network defaults (see :mod:`intake.direct`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cli.migration_input import parse_network
from intake import naming
from migration.model import MigrationProblem
from migration.naming import output_names
from migration.wire import vm_from_proto
from protocol.gen.h2k.v1 import migration_pb2

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID_INPUT = 2
EXIT_INTERRUPTED = 130
PROG = "hyper2kvm"
OUTPUT_FORMAT = "qcow2"
DEFAULT_NETWORK = "network:default"
POLL_SECONDS = 1.0
# How long a control plane may be unreachable while a migration is followed.
UNAVAILABLE_GRACE_SECONDS = 60.0
# After Ctrl-C in embedded mode: how long the cancelled migration may take to clean up.
CANCEL_WAIT_SECONDS = 30.0
TERMINAL = (
    migration_pb2.MIGRATION_STATE_COMPLETED,
    migration_pb2.MIGRATION_STATE_FAILED,
    migration_pb2.MIGRATION_STATE_CANCELLED,
)
TRUE_WORDS = ("1", "true", "yes", "y", "on")
DEFINITION_SUFFIXES = (".xml", ".kubevirt.yaml", ".report.json")


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop following, clean up, exit 130."""


class DirectFailure(Exception):
    """The run failed; the message is the one line for stderr."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- pure parts ------------------------------------------------------------------------------


def migration_id_for(vm_name: str, document: bytes, options: Mapping[str, Any]) -> str:
    """The intake's id (:func:`intake.naming.migration_id_for`: the same manifest gives the same
    migration in both modes), with ``options`` folded into the digest only when there are any."""
    if options:
        document += b"\n" + json.dumps(options, sort_keys=True).encode()
    return naming.migration_id_for(vm_name, document)


def is_definition(path: str) -> bool:
    """The libvirt domain, the KubeVirt manifest or the report (not a disk)."""
    return path.endswith(DEFINITION_SUFFIXES)


def output_lines(outputs: Sequence[str], boot_disk: str, verbose: bool) -> list[str]:
    """What stdout says about a completed migration: the boot disk first (HyperSDK takes the
    first line); with ``verbose`` then every other disk (``Output:``) and every definition
    and the report (``Wrote:``)."""
    lines = [f"Output: {boot_disk}"]
    if verbose:
        others = [p for p in outputs if p != boot_disk]
        lines += [f"Output: {p}" for p in others if not is_definition(p)]
        lines += [f"Wrote: {p}" for p in others if is_definition(p)]
    return lines


def boot_disk_path(spec: migration_pb2.MigrationSpec) -> str:
    """Where the boot disk's output is published (``<output dir>/<vm>.qcow2``)."""
    names = output_names(vm_from_proto(spec.vm), spec.output_format)
    return str(Path(spec.output_directory) / names.disks[0])


def dry_run_report_path(spec: migration_pb2.MigrationSpec) -> Path:
    return Path(spec.output_directory) / f"{spec.vm.name}.dry-run.report.json"


def progress_line(m: migration_pb2.Migration) -> str:
    """One stderr line: where the migration stands."""
    state = migration_pb2.MigrationState.Name(m.state).removeprefix("MIGRATION_STATE_")
    line = f"{PROG}: migration {m.spec.migration_id} {state} stage={m.stage or '-'}"
    line += f" disks={m.disks_done}/{m.disks_total}"
    if m.bytes_total:
        line += f" progress={100.0 * m.bytes_done / m.bytes_total:.0f}%"
    if m.reason and m.state not in TERMINAL:
        line += f" ({m.reason})"
    return line


def map_default_network(spec: migration_pb2.MigrationSpec, default: str) -> None:
    """Map every NIC network the spec leaves unmapped to ``default`` (empty: none).

    Raises:
        MigrationProblem: ``default`` is not a valid target.
    """
    if not default:
        return
    try:
        _, target = parse_network(f"default={default}")
    except MigrationProblem:
        raise MigrationProblem(
            [f"--default-network {default!r}: must be network:NAME or bridge:NAME"]
        ) from None
    for nic in spec.vm.nics:
        if nic.network and nic.network not in spec.network_map:
            spec.network_map[nic.network].CopyFrom(target)


def needs_root(spec: migration_pb2.MigrationSpec) -> bool:
    """Whether the local agent must be root: repairing the guest (even a dry run) attaches,
    mounts and chroots; converting alone needs only qemu-img."""
    return spec.pipeline.repair


def env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_WORDS


def note(message: str) -> None:
    """One line on stderr (never starting with Output: or Wrote:)."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
