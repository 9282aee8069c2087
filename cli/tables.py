"""Human-readable rendering with rich (tables, detail views) and YAML, for the commands
that print them: imported inside those commands, so a submit does not pay for rich at start.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
import yaml
from rich.console import Console, RenderableType
from rich.table import Table

from cli.guest_view import guest_parts
from cli.render import (
    dash,
    error_text,
    format_age,
    format_bytes,
    format_duration,
    format_progress_bytes,
    parse_time,
    progress_text,
)

# Wide enough that piped tables are not wrapped mid-path (rich defaults to 80 off a TTY).
_PIPE_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else _PIPE_WIDTH
    return Console(stderr=stderr, width=width, highlight=False)


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("JOB ID", "STATE", "OPERATION", "AGENT", "ATTEMPT", "PROGRESS", "SUBMITTED"):
        table.add_column(column, no_wrap=True)
    table.add_column("REASON")
    for job in jobs:
        table.add_row(
            job["job_id"],
            job["state"],
            dash(job["operation"]),
            dash(job["assigned_agent"]),
            str(job["attempt"]),
            progress_text(job),
            dash(job["submitted_at"]),
            job["queue_reason"] if job["state"] == "QUEUED" else "",
        )
    return table


def _timings(job: dict[str, Any]) -> str:
    started, finished = parse_time(job["started_at"]), parse_time(job["finished_at"])
    text = f"submitted {dash(job['submitted_at'])}"
    if started:
        text += f", started {job['started_at']}"
    if finished:
        text += f", finished {job['finished_at']}"
    if started and finished:
        text += f" ({format_duration((finished - started).total_seconds())})"
    return text


def job_summary(job: dict[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    spec_image = job["spec"].get("image", {})
    image = job["image"] + (f" ({spec_image['format']})" if spec_image.get("format") else "")
    rows = [
        ("Job", job["job_id"]),
        ("State", job["state"] + (" (cancel requested)" if job["cancel_requested"] else "")),
        ("Operation", dash(job["operation"])),
        ("Image", image),
        ("Agent", dash(job["assigned_agent"])),
        ("Attempt", str(job["attempt"])),
        ("Timings", _timings(job)),
        ("Progress", progress_text(job)),
        ("Trace", dash(job.get("trace_id"))),
    ]
    if job["state"] == "QUEUED":
        rows.append(("Queue reason", dash(job["queue_reason"])))
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def history_table(history: list[dict[str, Any]]) -> Table:
    table = Table(title="History", title_justify="left", box=None, header_style="bold")
    for column in ("FROM → TO", "TIME", "ATTEMPT", "REASON"):
        table.add_column(column, no_wrap=column != "REASON")
    for step in history:
        table.add_row(
            f"{step['from']} → {step['to']}",
            dash(step["time"]),
            str(step["attempt"]),
            step["reason"],
        )
    return table


def outputs_table(outputs: list[dict[str, Any]]) -> Table:
    table = Table(title="Outputs", title_justify="left", box=None, header_style="bold")
    for column in ("KIND", "PATH", "FORMAT", "SIZE", "SHA256"):
        table.add_column(column, no_wrap=True)
    for output in outputs:
        table.add_row(
            output["kind"],
            output["path"],
            dash(output["format"]),
            format_bytes(output["size_bytes"]),
            dash(output.get("sha256", "")),
        )
    return table


def job_detail(job: dict[str, Any]) -> list[RenderableType]:
    """Everything `h2kctl get` shows, in reading order."""
    parts: list[RenderableType] = [job_summary(job)]
    if job["history"]:
        parts += ["", history_table(job["history"])]
    result = job["result"]
    if result["outputs"]:
        parts += ["", outputs_table(result["outputs"])]
    parts += guest_parts(result.get("details") or {})
    if result["error"]:
        parts += ["", f"[bold red]Error[/] {error_text(result['error'])}"]
    return parts


def events_table(events: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("SEQ", "TIME", "STATE", "PHASE", "PERCENT", "BYTES", "AGENT"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE")
    for event in events:
        table.add_row(
            str(event["seq"]),
            dash(event["time"]),
            event["state"],
            dash(event["phase"]),
            f"{event['progress_percent']:.1f}%",
            format_progress_bytes(event["bytes_done"], event["bytes_total"]) or "-",
            dash(event["agent"]),
            event["message"],
        )
    return table


def agents_table(agents: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "STATE", "ADDRESS", "LEVEL"):
        table.add_column(column, no_wrap=True)
    table.add_column("CAPABILITIES")
    for column in ("JOBS", "HEARTBEAT", "VERSION"):
        table.add_column(column, no_wrap=True)
    for agent in agents:
        available = sorted(n for n, probe in agent["capabilities"].items() if probe["available"])
        table.add_row(
            agent["name"],
            agent["state"],
            agent["address"],
            agent["capability_level"],
            ",".join(available) or "-",
            f"{len(agent['running_job_ids'])}/{agent['max_concurrent_jobs']}",
            format_age(agent["last_heartbeat"]),
            dash(agent["version"]),
        )
    return table


def print_yaml(value: Any) -> None:
    typer.echo(yaml.safe_dump(value, sort_keys=False, allow_unicode=True), nl=False)


def print_rich(*parts: RenderableType) -> None:
    console = make_console()
    for part in parts:
        console.print(part)
