"""Plain-text rendering of the dicts from client.views: sizes, ages, durations, JSON.

No rich and no YAML here: every command imports this module, and those two cost more start-up
than the rest of a submit's imports together; the tables are in :mod:`cli.tables`, imported by
the commands that print them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


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


def dash(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def progress_text(job: dict[str, Any]) -> str:
    if not job["phase"] and not job["progress_percent"]:
        return "-"
    return f"{job['phase'] or '-'} {job['progress_percent']:.1f}%"


def error_text(error: dict[str, str]) -> str:
    return f"phase={dash(error['phase'])} code={dash(error['code'])} message={error['message']}"


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
