"""h2kctl: submit, follow and inspect h2k jobs; list and manage agents.

Global options go before the command: ``h2kctl --server cp:50051 get JOB_ID``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.agents import agents_app
from cli.follow import follow
from cli.migrations import migrate, migrations_app
from cli.render import DetailFormat, ListFormat, ListOutputOption, print_json
from cli.session import (
    EXIT_INVALID_INPUT,
    Settings,
    TLSOptions,
    fail,
    reporting_errors,
    settings_of,
    show_client_logs,
)
from client.views import event_to_dict, job_to_dict
from protocol.errors import InvalidArgument
from protocol.spec import JobSpec, parse_spec
from protocol.states import JobState
from runtime.tracing import setup_tracing, tracer

app = typer.Typer(
    name="h2kctl",
    help="Operate h2k: submit VM-disk migration jobs, follow them, manage agents.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(agents_app, name="agents")
app.add_typer(migrations_app, name="migrations")
app.command("migrate")(migrate)
_TRACER = tracer("h2kctl")

JobIdArgument = Annotated[str, typer.Argument(help="Job id.")]
AfterSeqOption = Annotated[
    int, typer.Option("--after-seq", min=0, help="Only events with a greater seq.")
]


@app.callback()
def main(
    ctx: typer.Context,
    server: Annotated[
        str, typer.Option("--server", envvar="H2K_SERVER", help="Control plane host:port.")
    ] = "127.0.0.1:50051",
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", envvar="H2K_INSECURE", help="Plaintext gRPC, no authentication."
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", envvar="H2K_TLS_CERT", help="Client certificate (PEM)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", envvar="H2K_TLS_KEY", help="Its key (PEM).")
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option("--tls-ca", envvar="H2K_TLS_CA", help="CA bundle of the server (PEM)."),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file", envvar="H2K_TOKEN_FILE", help="Bearer token (service accounts)."
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", envvar="H2K_TIMEOUT", help="Seconds per request (watch: none)."),
    ] = 30.0,
) -> None:
    """Operate h2k: submit VM-disk migration jobs, follow them, manage agents."""
    show_client_logs()
    setup_tracing("h2kctl", asyncio_client=False)
    ctx.obj = Settings(
        server=server,
        insecure=insecure,
        timeout=timeout,
        tls=TLSOptions(ca=tls_ca, cert=tls_cert, key=tls_key, token_file=token_file),
    )


# --- submit -------------------------------------------------------------------------------


def _read_document(file: str) -> Any:
    """The JSON document in ``file`` ("-": stdin); exits 2 when unreadable."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"error: cannot read {file}: {exc}", EXIT_INVALID_INPUT) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"error: {file} is not valid JSON: {exc}", EXIT_INVALID_INPUT) from None


def load_spec(file: str) -> JobSpec:
    """Read and validate a v1 job file; on failure print every "field: rule" and exit 2."""
    document = _read_document(file)
    try:
        return parse_spec(document)
    except InvalidArgument as exc:
        typer.echo(f"error: INVALID_ARGUMENT: {file} is not a valid v1 job spec:", err=True)
        for problem in exc.message.split("; "):
            typer.echo(problem, err=True)
        raise typer.Exit(EXIT_INVALID_INPUT) from None


@app.command()
def submit(
    ctx: typer.Context,
    files: Annotated[
        list[str],
        typer.Argument(
            help="v1 job JSON files (- for stdin); several are submitted in one call, all or none."
        ),
    ],
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Then follow it like `watch` (one file).")
    ] = False,
) -> None:
    """Validate and submit v1 job files; print each job id on stdout."""
    if watch and len(files) > 1:
        typer.echo("error: --watch follows one job: give one file", err=True)
        raise typer.Exit(EXIT_INVALID_INPUT)
    specs = [load_spec(file) for file in files]
    settings = settings_of(ctx)
    # The root of the jobs' trace: the control plane and the agents continue it.
    span_attributes = {"h2k.job_id": specs[0].job_id, "h2k.operation": specs[0].operation.value}
    with (
        reporting_errors(settings),
        settings.connect() as client,
        _TRACER.start_as_current_span("h2kctl submit", attributes=span_attributes),
    ):
        # One file keeps to SubmitJob, which every v1 control plane serves.
        results = [client.submit(specs[0])] if len(specs) == 1 else client.submit_many(specs)
        for spec, result in zip(specs, results, strict=True):
            typer.echo(spec.job_id)
            if not result.created:
                state = job_to_dict(result.job)["state"]
                typer.echo(
                    f"job {spec.job_id} already exists with the same spec (state {state})",
                    err=True,
                )
        if watch:
            raise typer.Exit(follow(client, specs[0].job_id))


# --- following and reading jobs -----------------------------------------------------------


@app.command()
def watch(ctx: typer.Context, job_id: JobIdArgument, after_seq: AfterSeqOption = 0) -> None:
    """Follow a job live until it ends. Exit 0 when it COMPLETED, 1 when FAILED or CANCELLED."""
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        raise typer.Exit(follow(client, job_id, after_seq=after_seq))


@app.command()
def get(
    ctx: typer.Context,
    job_id: JobIdArgument,
    output: Annotated[
        DetailFormat, typer.Option("--output", "-o", help="table, json or yaml.")
    ] = DetailFormat.TABLE,
) -> None:
    """Show one job: state, timings, progress, history, outputs, error."""
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        job = client.get(job_id)
    view = {**job_to_dict(job), "trace_id": job.trace_id}
    from cli import tables  # rich and yaml: only for the output that needs them (start-up)

    if output is DetailFormat.JSON:
        print_json(view)
    elif output is DetailFormat.YAML:
        tables.print_yaml(view)
    else:
        tables.print_rich(*tables.job_detail(view))


def _parse_states(names: list[str]) -> list[JobState]:
    states = []
    for name in names:
        key = name.strip().upper().removeprefix("JOB_STATE_")
        if key not in JobState.__members__:
            valid = ", ".join(state.value.lower() for state in JobState)
            raise typer.BadParameter(f"{name!r} is not one of {valid}", param_hint="--state")
        states.append(JobState[key])
    return states


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", "-s", help="Only jobs in this state (repeatable, any case)."),
    ] = None,
    output: ListOutputOption = ListFormat.TABLE,
) -> None:
    """List jobs, optionally only those in the given states."""
    states = _parse_states(state or [])
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        views = [job_to_dict(job) for job in client.list(states or None)]
    if output is ListFormat.JSON:
        print_json(views)
    else:
        from cli import tables  # rich: only when a table is printed (start-up)

        tables.print_rich(tables.jobs_table(views))


@app.command()
def events(
    ctx: typer.Context,
    job_id: JobIdArgument,
    output: Annotated[
        ListFormat, typer.Option("--output", "-o", help="table, or json (one object per line).")
    ] = ListFormat.TABLE,
    after_seq: AfterSeqOption = 0,
) -> None:
    """Show a job's stored progress events in seq order."""
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        views = [event_to_dict(event) for event in client.events(job_id, after_seq=after_seq)]
    if output is ListFormat.JSON:
        for view in views:
            print_json(view, indent=None)
    else:
        from cli import tables  # rich: only when a table is printed (start-up)

        tables.print_rich(tables.events_table(views))


@app.command()
def cancel(
    ctx: typer.Context,
    job_id: JobIdArgument,
    reason: Annotated[str, typer.Option("--reason", help="Recorded in the job's history.")] = "",
) -> None:
    """Cancel a job and print its resulting state."""
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        view = job_to_dict(client.cancel(job_id, reason=reason))
    typer.echo(view["state"])
    if view["cancel_requested"] and view["state"] not in ("CANCELLED", "COMPLETED", "FAILED"):
        typer.echo(f"cancellation of {job_id} requested; the agent is stopping it", err=True)
