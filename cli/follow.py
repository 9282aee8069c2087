"""`h2kctl watch`: follow a job live (a progress bar on a TTY, one line per event otherwise)."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import typer

from cli.render import error_text, format_bytes, format_progress_bytes
from cli.session import EXIT_FAILED, EXIT_OK
from client import H2KClient
from client.views import job_to_dict, state_name
from protocol.gen.h2k.v1 import job_pb2


def event_line(event: job_pb2.ProgressEvent) -> str:
    """ "seq=12 state=PROGRESSING phase=convert 42.0% 420.0 MiB/1.0 GiB message"."""
    parts = [f"seq={event.seq}", f"state={state_name(event.state)}"]
    if event.phase:
        parts.append(f"phase={event.phase}")
    parts.append(f"{event.progress_percent:.1f}%")
    sizes = format_progress_bytes(event.bytes_done, event.bytes_total)
    if sizes:
        parts.append(sizes)
    if event.message:
        parts.append(event.message)
    return " ".join(parts)


def _print_lines(events: Iterable[job_pb2.ProgressEvent]) -> None:
    for event in events:
        typer.echo(event_line(event))


def _show_bar(job: job_pb2.Job, events: Iterable[job_pb2.ProgressEvent]) -> None:
    # Imported here, after the submit was sent: rich is most of the CLI's start-up otherwise.
    from rich.progress import BarColumn, Progress, TextColumn

    from cli.tables import make_console

    job_id = job.spec.job_id
    waiting = state_name(job.state) + (f": {job.queue_reason}" if job.queue_reason else "")
    progress = Progress(
        TextColumn("[bold]{task.fields[phase]:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[sizes]}"),
        TextColumn("{task.fields[message]}"),
        console=make_console(),
        transient=False,
    )
    with progress:
        task = progress.add_task(
            job_id, total=100.0, phase=job.phase or "-", sizes="", message=waiting
        )
        last_state = None
        for event in events:
            state = state_name(event.state)
            if state != last_state:  # state changes stay visible above the bar
                progress.console.print(f"seq={event.seq} state={state} agent={event.agent}")
                last_state = state
            progress.update(
                task,
                completed=event.progress_percent,
                phase=event.phase or "-",
                sizes=format_progress_bytes(event.bytes_done, event.bytes_total),
                message=event.message,
            )


def print_outcome(job: job_pb2.Job) -> int:
    """Print the final state (outputs, or the error) and return the exit code."""
    view = job_to_dict(job)
    typer.echo(f"final state={view['state']}")
    for output in view["result"]["outputs"]:
        typer.echo(
            f"output kind={output['kind']} path={output['path']} format={output['format']} "
            f"size={format_bytes(output['size_bytes'])} sha256={output['sha256'] or '-'}"
        )
    if view["result"]["error"]:
        typer.echo(f"error: {error_text(view['result']['error'])}", err=True)
    return EXIT_OK if view["state"] == "COMPLETED" else EXIT_FAILED


def follow(client: H2KClient, job_id: str, after_seq: int = 0) -> int:
    """Follow the job until it ends; return 0 when it COMPLETED, 1 otherwise."""
    # Asking for the job first fails fast on a wrong id or an unreachable control plane;
    # the watch itself would keep retrying UNAVAILABLE for up to a minute.
    job = client.get(job_id)
    events = client.watch(job_id, after_seq=after_seq)
    if sys.stdout.isatty():
        _show_bar(job, events)
    else:
        _print_lines(events)
    return print_outcome(client.get(job_id))
