"""Human-readable rendering (rich tables, sizes, ages) of the dicts from client.views."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, RenderableType
from rich.table import Table

from cli.guest_view import guest_parts

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
# Wide enough that piped tables are not wrapped mid-path (rich defaults to 80 off a TTY).
_PIPE_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else _PIPE_WIDTH
    return Console(stderr=stderr, width=width, highlight=False)


def format_bytes(count: int) -> str:
    """1024-based sizes: "512 B", "420.0 MiB", "1.0 GiB"."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def format_progress_bytes(done: int, total: int) -> str:
    """ "420.0 MiB/1.0 GiB", or just the done part when the total is unknown ("" if none)."""
    if total > 0:
        return f"{format_bytes(done)}/{format_bytes(total)}"
    return format_bytes(done) if done > 0 else ""


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def format_age(value: str | None, now: datetime | None = None) -> str:
    """ "42s ago", "3m ago", "5h ago", "2d ago"; "-" when unknown."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    return f"{format_duration(seconds)} ago"


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def _dash(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def _progress_text(job: dict[str, Any]) -> str:
    if not job["phase"] and not job["progress_percent"]:
        return "-"
    return f"{job['phase'] or '-'} {job['progress_percent']:.1f}%"


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("JOB ID", "STATE", "OPERATION", "AGENT", "ATTEMPT", "PROGRESS", "SUBMITTED"):
        table.add_column(column, no_wrap=True)
    table.add_column("REASON")
    for job in jobs:
        table.add_row(
            job["job_id"],
            job["state"],
            _dash(job["operation"]),
            _dash(job["assigned_agent"]),
            str(job["attempt"]),
            _progress_text(job),
            _dash(job["submitted_at"]),
            job["queue_reason"] if job["state"] == "QUEUED" else "",
        )
    return table


def _timings(job: dict[str, Any]) -> str:
    started, finished = parse_time(job["started_at"]), parse_time(job["finished_at"])
    text = f"submitted {_dash(job['submitted_at'])}"
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
        ("Operation", _dash(job["operation"])),
        ("Image", image),
        ("Agent", _dash(job["assigned_agent"])),
        ("Attempt", str(job["attempt"])),
        ("Timings", _timings(job)),
        ("Progress", _progress_text(job)),
        ("Trace", _dash(job.get("trace_id"))),
    ]
    if job["state"] == "QUEUED":
        rows.append(("Queue reason", _dash(job["queue_reason"])))
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
            _dash(step["time"]),
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
            _dash(output["format"]),
            format_bytes(output["size_bytes"]),
            _dash(output.get("sha256", "")),
        )
    return table


def error_text(error: dict[str, str]) -> str:
    return f"phase={_dash(error['phase'])} code={_dash(error['code'])} message={error['message']}"


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
            _dash(event["time"]),
            event["state"],
            _dash(event["phase"]),
            f"{event['progress_percent']:.1f}%",
            format_progress_bytes(event["bytes_done"], event["bytes_total"]) or "-",
            _dash(event["agent"]),
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
            _dash(agent["version"]),
        )
    return table


class ListFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


ListOutputOption = Annotated[ListFormat, typer.Option("--output", "-o", help="table or json.")]


class DetailFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def print_json(value: Any, indent: int | None = 2) -> None:
    typer.echo(json.dumps(value, indent=indent, ensure_ascii=False))


def print_yaml(value: Any) -> None:
    typer.echo(yaml.safe_dump(value, sort_keys=False, allow_unicode=True), nl=False)


def print_rich(*parts: RenderableType) -> None:
    console = make_console()
    for part in parts:
        console.print(part)
