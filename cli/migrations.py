"""`h2kctl migrate` and `h2kctl migrations`: move whole VMs, list, inspect and cancel them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from google.protobuf import json_format

from cli.render import (
    DetailFormat,
    ListFormat,
    ListOutputOption,
    format_bytes,
    format_duration,
    print_json,
)
from cli.session import EXIT_FAILED, EXIT_INVALID_INPUT, EXIT_OK, reporting_errors, settings_of
from client import H2KClient
from protocol.gen.h2k.v1 import job_pb2, migration_pb2

if TYPE_CHECKING:
    from rich.table import Table

migrations_app = typer.Typer(help="List migrations, show one, cancel one.", no_args_is_help=True)
MigrationIdArgument = Annotated[str, typer.Argument(help="Migration id.")]
POLL_SECONDS = 0.25


def state_name(value: int) -> str:
    return migration_pb2.MigrationState.Name(value).removeprefix("MIGRATION_STATE_")


def migration_to_dict(m: migration_pb2.Migration) -> dict[str, Any]:
    view = json_format.MessageToDict(m, preserving_proto_field_name=True)
    view["state"] = state_name(m.state)
    view["spec"].pop("input_document", None)
    return view


# rich is imported inside the functions that print with it: a submit must not pay for it.


def migrations_table(migrations: list[migration_pb2.Migration]) -> Table:
    from rich.table import Table

    table = Table("migration", "vm", "state", "stage", "disks", "bytes", "eta", "reason")
    for m in migrations:
        eta = format_duration(m.eta_seconds) if m.eta_seconds else "-"
        table.add_row(
            m.spec.migration_id,
            m.spec.vm.name,
            state_name(m.state),
            m.stage,
            f"{m.disks_done}/{m.disks_total}",
            f"{format_bytes(m.bytes_done)} / {format_bytes(m.bytes_total)}",
            eta,
            m.reason or "-",
        )
    return table


def jobs_table(m: migration_pb2.Migration) -> Table:
    from rich.table import Table

    table = Table("job", "disk", "role", "state", "progress", "output", "error")
    for job in m.jobs:
        state = job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_") if job.state else "-"
        table.add_row(
            job.job_id,
            job.disk_id or "-",
            job.role,
            state,
            f"{job.progress_percent:.0f}%",
            job.output_path or "-",
            job.error or "-",
        )
    return table


def outcome(m: migration_pb2.Migration) -> int:
    """Print how the migration ended; the exit status (0 only when COMPLETED)."""
    state = state_name(m.state)
    from cli.tables import make_console

    err = make_console(stderr=True)
    if m.state == migration_pb2.MIGRATION_STATE_COMPLETED:
        for path in m.outputs:
            typer.echo(f"Output: {path}")
        err.print(f"migration {m.spec.migration_id}: COMPLETED ({m.reason})")
        return EXIT_OK
    err.print(f"migration {m.spec.migration_id}: {state}: {m.reason}")
    return EXIT_FAILED


def watch_migrations(client: H2KClient, ids: list[str]) -> int:
    """One bar per disk and a total per migration, until every migration ended."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from cli.tables import make_console

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TimeRemainingColumn(),
    )
    finished: dict[str, migration_pb2.Migration] = {}
    with Progress(*columns, console=make_console(stderr=True), transient=False) as bars:
        tasks: dict[str, Any] = {}
        while len(finished) < len(ids):
            for mid in ids:
                if mid in finished:
                    continue
                m = client.get_migration(mid)
                rows = [(f"{mid} total", m.bytes_done, m.bytes_total)]
                rows += [
                    (f"  {j.disk_id} {j.role}", j.bytes_done, j.bytes_total)
                    for j in m.jobs
                    if j.disk_id
                ]
                for label, done, total in rows:
                    if label not in tasks:
                        tasks[label] = bars.add_task(label, total=total or None)
                    bars.update(tasks[label], completed=done, total=total or None)
                if state_name(m.state) in ("COMPLETED", "FAILED", "CANCELLED"):
                    finished[mid] = m
            if len(finished) < len(ids):
                time.sleep(POLL_SECONDS)  # polling a remote state, not synchronising
    codes = [outcome(finished[mid]) for mid in ids]
    return max(codes)


def migrate(
    ctx: typer.Context,
    files: Annotated[
        list[str],
        typer.Argument(help="Artifact Manifest v1 (.json), .ova or .ovf; several: a wave."),
    ],
    output_dir: Annotated[
        str, typer.Option("--output-dir", help="Where the outputs go (default: the manifest's).")
    ] = "",
    network: Annotated[
        list[str],
        typer.Option(
            "--network",
            help="SOURCE=network:NAME|bridge:NAME[,pod|multus:NAME]; one per NIC network.",
        ),
    ] = [],  # noqa: B006 - typer reads the default
    migration_id: Annotated[
        str | None, typer.Option("--id", help="Migration id (one file; default: the VM name).")
    ] = None,
    max_in_flight: Annotated[
        int, typer.Option("--max-in-flight", min=0, help="Per source; 0: no limit.")
    ] = 0,
    source_key: Annotated[
        str,
        typer.Option(
            "--source-key", help="Group for --max-in-flight (default: provider/datacenter)."
        ),
    ] = "",
    keep_partial: Annotated[
        bool, typer.Option("--keep-partial", help="A failed migration keeps its staged outputs.")
    ] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow until done.")] = False,
) -> None:
    """Migrate whole VMs: every disk converted, the guest repaired, libvirt and KubeVirt
    definitions written. Prints each migration id."""
    if migration_id and len(files) > 1:
        typer.echo("error: --id names one migration: give one file", err=True)
        raise typer.Exit(EXIT_INVALID_INPUT)
    # Imported here: reading manifests, OVF and OVA (xml, tar) is only for this command, and
    # every other h2kctl command starts without it.
    from cli.migration_input import parse_network, read_input
    from migration.model import MigrationProblem

    try:
        networks = dict(parse_network(option) for option in network)
        specs = [
            read_input(f, migration_id=migration_id, output_directory=output_dir, networks=networks)
            for f in files
        ]
    except MigrationProblem as exc:
        typer.echo("error: INVALID_ARGUMENT:", err=True)
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(EXIT_INVALID_INPUT) from None
    for spec in specs:
        spec.max_in_flight_per_source = max_in_flight
        if source_key:
            spec.source_key = source_key
        spec.keep_partial_outputs = keep_partial
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        answers = client.submit_migrations(specs)
        for answer in answers:
            typer.echo(answer.migration.spec.migration_id)
            if not answer.created:
                state = state_name(answer.migration.state)
                typer.echo(
                    f"migration {answer.migration.spec.migration_id} already exists with the "
                    f"same input (state {state})",
                    err=True,
                )
        if watch:
            raise typer.Exit(watch_migrations(client, [s.migration_id for s in specs]))


@migrations_app.command("list")
def list_migrations(ctx: typer.Context, output: ListOutputOption = ListFormat.TABLE) -> None:
    """VMs, state, disks done/total, bytes, ETA."""
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        found = client.list_migrations()
    if output is ListFormat.JSON:
        print_json([migration_to_dict(m) for m in found])
    else:
        from cli.tables import print_rich

        print_rich(migrations_table(found))


@migrations_app.command("get")
def get_migration(
    ctx: typer.Context,
    migration_id: MigrationIdArgument,
    output: Annotated[
        DetailFormat, typer.Option("--output", "-o", help="table, json or yaml.")
    ] = DetailFormat.TABLE,
) -> None:
    """One migration: per-disk jobs, outputs, history."""
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        m = client.get_migration(migration_id)
    from cli.tables import print_rich, print_yaml

    if output is DetailFormat.JSON:
        print_json(migration_to_dict(m))
    elif output is DetailFormat.YAML:
        print_yaml(migration_to_dict(m))
    else:
        print_rich(migrations_table([m]), jobs_table(m))
        for path in m.outputs:
            typer.echo(f"output: {path}")


@migrations_app.command("cancel")
def cancel_migration(ctx: typer.Context, migration_id: MigrationIdArgument) -> None:
    """Cancel a migration and all its jobs; its staged outputs are removed."""
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        m = client.cancel_migration(migration_id, "cancelled with h2kctl")
    typer.echo(f"migration {migration_id}: cancel requested (state {state_name(m.state)})")
