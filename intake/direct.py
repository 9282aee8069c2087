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
import json
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from google.protobuf import json_format

from cli.migration_input import parse_network, read_input
from client import H2KClient
from intake.direct_parts import (
    DEFAULT_NETWORK,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    EXIT_OK,
    OUTPUT_FORMAT,
    PROG,
    DirectFailure,
    Interrupted,
    boot_disk_path,
    dry_run_report_path,
    map_default_network,
    migration_id_for,
    note,
    output_lines,
)
from intake.direct_remote import RemoteSettings, cancel_and_wait, control_plane, follow, submit
from intake.files import atomic_write
from migration.model import MigrationProblem
from protocol.errors import H2KError
from protocol.gen.h2k.v1 import migration_pb2

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


# --- how it ended ----------------------------------------------------------------------------


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
            atomic_write(target, json.dumps(report, indent=2, sort_keys=True) + "\n")
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
