"""``hyper2kvm MANIFEST``: HyperSDK's direct mode, served by h2k.

HyperSDK runs ``hyper2kvm <manifest> [-v] [--dry-run]`` on the conversion host, waits for it,
and takes the first line of its output that starts with ``Output:`` or ``Wrote:`` as the
converted image (it reads stdout and stderr merged, and splits the line on whitespace). So:

* stdout carries only ``Output:`` / ``Wrote:`` lines, the boot disk's first; nothing on stderr
  ever starts with either word (progress lines start with ``hyper2kvm:``).
* exit 0 only when the migration COMPLETED and the boot disk file is there; 1 when it failed
  (one line on stderr says why); 2 when the manifest or an option is invalid (naming the
  field); 130 when interrupted.

The migration is submitted to the control plane named by ``H2K_SERVER`` (TLS and tokens from
``H2K_INSECURE``, ``H2K_TLS_CA``, ``H2K_TLS_CERT``, ``H2K_TLS_KEY``, ``H2K_TOKEN_FILE``, like
h2kctl), or, without it, to a private control plane and agent started for this run
(:mod:`intake.embedded`), stopped when it ends.

Decisions:

* The output format is always qcow2: HyperSDK looks for ``<vm>.qcow2``.
* The migration id is ``<vm>-<12 hex of sha256>`` over the manifest's bytes (and, when given,
  the options that change the spec: ``--output-dir``, ``--network``, ``--default-network``,
  ``--dry-run``), so running the same command again attaches to the same migration instead of
  starting another, and a dry run never collides with the real one.
* A NIC network without ``--network`` is mapped to ``--default-network`` (``network:default``;
  an empty value maps nothing, and then the control plane refuses an unmapped network).
* ``--dry-run`` writes only a report: the control plane writes no output at all in a dry run,
  so hyper2kvm writes ``<vm>.dry-run.report.json`` (the repair job's report of what it would
  change) into the output directory itself and prints ``Wrote: <it>``. The name differs from
  ``<vm>.report.json`` so that a dry run never overwrites a real migration's report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from google.protobuf import json_format

from cli.migration_input import parse_network, read_input
from client import H2KClient
from intake.embedded import EmbeddedLayout, EmbeddedStartError, embedded_cluster
from migration.model import MigrationProblem
from migration.naming import output_names
from migration.wire import vm_from_proto
from protocol.errors import AlreadyExists, H2KError, InvalidArgument, Unavailable
from protocol.gen.h2k.v1 import migration_pb2
from runtime.tls import TLSConfigError, client_credentials

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
ID_DIGEST_CHARS = 12
ID_NAME_CHARS = 60
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
    """``<vm>-<12 hex>``: the VM's name made safe for a migration id, and a digest of the
    manifest's bytes (with ``options`` folded in only when there are any)."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in vm_name)
    safe = safe.strip("-._")[:ID_NAME_CHARS].rstrip("-._") or "vm"
    digest = hashlib.sha256(document)
    if options:
        digest.update(b"\n" + json.dumps(options, sort_keys=True).encode())
    return f"{safe}-{digest.hexdigest()[:ID_DIGEST_CHARS]}"


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


# --- the command line ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line (argparse exits with status 2 on a bad one)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Migrate the VM an Artifact Manifest v1 describes to KVM with h2k; print "
        "'Output: <boot disk>'. Uses the control plane at $H2K_SERVER, or runs its own.",
    )
    parser.add_argument("manifest", help="Artifact Manifest v1 (JSON) written by HyperSDK")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print every output, and per-disk progress"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="report what the repair would change; write only that report",
    )
    parser.add_argument(
        "--output-dir", default="", help="where the outputs go (default: output.directory)"
    )
    parser.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="SOURCE=TARGET",
        help="SOURCE=network:NAME|bridge:NAME[,pod|multus:NAME]; one per NIC network",
    )
    parser.add_argument(
        "--default-network",
        default=DEFAULT_NETWORK,
        metavar="TARGET",
        help=f"for NIC networks without --network (default {DEFAULT_NETWORK}; '' for none)",
    )
    return parser.parse_args(argv)


def spec_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that change the spec, when they differ from the defaults (for the id)."""
    options: dict[str, Any] = {}
    if args.output_dir:
        options["output_dir"] = os.path.abspath(args.output_dir)
    if args.network:
        options["network"] = sorted(args.network)
    if args.default_network != DEFAULT_NETWORK:
        options["default_network"] = args.default_network
    if args.dry_run:
        options["dry_run"] = True
    return options


def build_spec(args: argparse.Namespace) -> migration_pb2.MigrationSpec:
    """The migration of the manifest, as direct mode runs it.

    Raises:
        MigrationProblem: the manifest or an option is invalid; every problem named.
    """
    path = Path(args.manifest)
    try:
        document = path.read_bytes()
    except OSError as exc:
        raise MigrationProblem([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    networks = dict(parse_network(option) for option in args.network)
    output_dir = os.path.abspath(args.output_dir) if args.output_dir else ""
    # read_input names the migration; the name needs the VM, which it reads: use a
    # placeholder and set the real id once the VM's name is known.
    spec = read_input(
        str(path), migration_id="pending", output_directory=output_dir, networks=networks
    )
    spec.migration_id = migration_id_for(spec.vm.name, document, spec_options(args))
    if spec.output_format != OUTPUT_FORMAT:
        note(f"output.format {spec.output_format!r} ignored: HyperSDK takes {OUTPUT_FORMAT}")
        spec.output_format = OUTPUT_FORMAT
    if not os.path.isabs(spec.output_directory):
        raise MigrationProblem(
            [f"output.directory: {spec.output_directory!r} must be an absolute path"]
        )
    spec.dry_run = spec.dry_run or args.dry_run
    map_default_network(spec, args.default_network)
    return spec


def note(message: str) -> None:
    """One line on stderr (never starting with Output: or Wrote:)."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# --- talking to a control plane --------------------------------------------------------------


@dataclass(frozen=True)
class RemoteSettings:
    """The control plane of ``H2K_SERVER`` and how to reach it."""

    server: str
    insecure: bool
    timeout: float
    ca: str = ""
    cert: str = ""
    key: str = ""
    token_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RemoteSettings | None:
        """None without ``H2K_SERVER``."""
        server = env.get("H2K_SERVER", "").strip()
        if not server:
            return None
        try:
            timeout = float(env.get("H2K_TIMEOUT") or 30.0)
        except ValueError:
            raise DirectFailure(
                "H2K_TIMEOUT: must be a number of seconds", EXIT_INVALID_INPUT
            ) from None
        return cls(
            server=server,
            insecure=env_flag(env.get("H2K_INSECURE")),
            timeout=timeout,
            ca=env.get("H2K_TLS_CA", ""),
            cert=env.get("H2K_TLS_CERT", ""),
            key=env.get("H2K_TLS_KEY", ""),
            token_file=env.get("H2K_TOKEN_FILE", ""),
        )

    def connect(self) -> H2KClient:
        if self.insecure:
            return H2KClient(self.server, insecure=True, timeout=self.timeout)
        if not self.ca or not (self.cert or self.token_file):
            raise DirectFailure(
                "no TLS material for H2K_SERVER: set H2K_TLS_CA and either H2K_TLS_CERT and "
                "H2K_TLS_KEY or H2K_TOKEN_FILE; or H2K_INSECURE=1 for plaintext",
                EXIT_INVALID_INPUT,
            )
        try:
            credentials = client_credentials(
                Path(self.ca),
                Path(self.cert) if self.cert else None,
                Path(self.key) if self.key else None,
                Path(self.token_file) if self.token_file else None,
            )
        except TLSConfigError as exc:
            raise DirectFailure(str(exc), EXIT_INVALID_INPUT) from None
        return H2KClient(self.server, timeout=self.timeout, credentials=credentials)


def embedded_layout(spec: migration_pb2.MigrationSpec) -> EmbeddedLayout:
    """The local agent reads the disks' directories and writes the output directory (paths
    resolved, as the agent compares resolved paths)."""
    inputs = sorted({os.path.dirname(os.path.realpath(d.path)) for d in spec.vm.disks})
    return EmbeddedLayout(
        allow_input=[Path(p) for p in inputs],
        allow_output=[Path(os.path.realpath(spec.output_directory))],
    )


@contextmanager
def control_plane(
    spec: migration_pb2.MigrationSpec, remote: RemoteSettings | None
) -> Iterator[H2KClient]:
    """A client of ``remote``, or of an embedded control plane started for ``spec``."""
    if remote is not None:
        with remote.connect() as client:
            yield client
        return
    if needs_root(spec) and os.geteuid() != 0:
        raise DirectFailure(
            "the manifest's pipeline.fix repairs the guest, which needs root (attach, mount, "
            "chroot): run hyper2kvm as root, or disable pipeline.fix to convert only"
        )
    try:
        os.makedirs(spec.output_directory, exist_ok=True)
    except OSError as exc:
        raise DirectFailure(
            f"output directory {spec.output_directory}: cannot create: {exc.strerror}"
        ) from None
    note("starting an embedded control plane and agent (H2K_SERVER is not set)")
    try:
        with embedded_cluster(embedded_layout(spec)) as address, H2KClient(address) as client:
            yield client
    except EmbeddedStartError as exc:
        raise DirectFailure(str(exc)) from None


def submit(client: H2KClient, spec: migration_pb2.MigrationSpec) -> migration_pb2.Migration:
    """Submit, or attach to the migration this manifest already started."""
    try:
        answer = client.submit_migrations([spec])[0]
    except InvalidArgument as exc:
        raise DirectFailure(f"invalid migration: {exc.message}", EXIT_INVALID_INPUT) from None
    except AlreadyExists as exc:
        raise DirectFailure(f"{exc.message}", EXIT_FAILED) from None
    if answer.created:
        note(f"migration {spec.migration_id} submitted")
    else:
        note(f"attached to migration {spec.migration_id}, submitted before with this manifest")
    return answer.migration


def follow(client: H2KClient, migration_id: str, verbose: bool) -> migration_pb2.Migration:
    """Poll the migration until it ends, printing progress lines on stderr on each change."""
    last = ""
    unreachable_since: float | None = None
    while True:
        try:
            m = client.get_migration(migration_id)
            unreachable_since = None
        except Unavailable as exc:
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since > UNAVAILABLE_GRACE_SECONDS:
                raise DirectFailure(f"the control plane cannot be reached: {exc.message}") from None
            time.sleep(POLL_SECONDS)  # polling a remote state, not synchronising
            continue
        lines = [progress_line(m)]
        if verbose:
            lines += [
                f"{PROG}:   {j.disk_id or '-'} {j.role} {j.progress_percent:.0f}%" for j in m.jobs
            ]
        text = "\n".join(lines)
        if text != last:
            print(text, file=sys.stderr, flush=True)
            last = text
        if m.state in TERMINAL:
            return m
        time.sleep(POLL_SECONDS)  # polling a remote state, not synchronising


def cancel_and_wait(client: H2KClient, migration_id: str) -> None:
    """Cancel the migration and give its cleanup a bounded time (embedded mode's Ctrl-C)."""
    try:
        client.cancel_migration(migration_id, f"{PROG} interrupted")
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            if client.get_migration(migration_id).state in TERMINAL:
                return
            time.sleep(POLL_SECONDS)  # polling a remote state, not synchronising
    except H2KError as exc:
        note(f"cancelling migration {migration_id} failed: {exc.message}")


# --- how it ended ----------------------------------------------------------------------------


def write_atomically(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through a temporary file renamed over it."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def dry_run_report(client: H2KClient, m: migration_pb2.Migration, manifest: str) -> dict[str, Any]:
    """What a dry run found: the repair job's report (None when nothing is repaired)."""
    repair = next((j for j in m.jobs if j.role == "repair"), None)
    details = None
    if repair is not None:
        job = client.get(repair.job_id)
        details = json_format.MessageToDict(job.result.details)
    return {
        "migration_id": m.spec.migration_id,
        "vm": m.spec.vm.name,
        "manifest": os.path.abspath(manifest),
        "dry_run": True,
        "state": "COMPLETED",
        "reason": m.reason,
        "note": "a dry run writes no disk and no definition; hyper2kvm wrote this report "
        "from the repair job's result",
        "repair": details,
    }


def completed_lines(
    client: H2KClient, m: migration_pb2.Migration, args: argparse.Namespace
) -> list[str]:
    """The stdout lines of a COMPLETED migration, after checking what they name exists."""
    spec = m.spec
    if spec.dry_run:
        target = dry_run_report_path(spec)
        report = dry_run_report(client, m, args.manifest)
        try:
            write_atomically(target, json.dumps(report, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise DirectFailure(f"writing the dry-run report {target}: {exc.strerror}") from None
        return [f"Wrote: {target}"]
    boot = boot_disk_path(spec)
    if not os.path.isfile(boot):
        raise DirectFailure(f"migration {spec.migration_id} COMPLETED but {boot} is missing")
    return output_lines(list(m.outputs), boot, args.verbose)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The whole direct-mode run; returns the exit status.

    Raises:
        DirectFailure: it failed; the message is for stderr.
        Interrupted: SIGINT or SIGTERM arrived.
    """
    try:
        spec = build_spec(args)
    except MigrationProblem as exc:
        problems = "; ".join(exc.problems)
        raise DirectFailure(f"invalid manifest: {problems}", EXIT_INVALID_INPUT) from None
    remote = RemoteSettings.from_env(env)
    with control_plane(spec, remote) as client:
        try:
            submit(client, spec)
            m = follow(client, spec.migration_id, args.verbose)
        except (Interrupted, KeyboardInterrupt):
            if remote is None:  # the embedded control plane goes away: end the migration
                note(f"interrupted: cancelling migration {spec.migration_id}")
                cancel_and_wait(client, spec.migration_id)
            raise
        if m.state != migration_pb2.MIGRATION_STATE_COMPLETED:
            state = migration_pb2.MigrationState.Name(m.state).removeprefix("MIGRATION_STATE_")
            raise DirectFailure(f"migration {spec.migration_id} {state}: {m.reason}")
        lines = completed_lines(client, m, args)
    for line in lines:
        print(line, flush=True)
    return EXIT_OK


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``hyper2kvm``; returns the exit status."""
    args = parse_args(argv)
    # SIGTERM (HyperSDK's timeout, systemd) unwinds like Ctrl-C, so the embedded servers are
    # stopped and the temporary directory removed.
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        return run(args, os.environ)
    except DirectFailure as exc:
        note(f"error: {exc}")
        return exc.exit_code
    except H2KError as exc:
        note(f"error: {exc.code.name}: {exc.message.removeprefix(exc.code.name + ': ')}")
        return EXIT_FAILED
    except (Interrupted, KeyboardInterrupt):
        note("interrupted")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
