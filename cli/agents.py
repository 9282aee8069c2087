"""`h2kctl agents`: list agents; cordon, uncordon and drain one."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from cli.render import ListFormat, ListOutputOption, print_json
from cli.session import reporting_errors, settings_of
from client.views import agent_to_dict
from protocol.gen.h2k.v1 import agent_pb2

agents_app = typer.Typer(
    help="List agents (bare `agents`), or cordon, uncordon and drain one.",
    invoke_without_command=True,
    no_args_is_help=False,
)

AgentNameArgument = Annotated[str, typer.Argument(help="Agent name.")]

_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in "90", "90s", "30m", "2h", "1d" or combinations like "1h30m".

    Raises:
        typer.BadParameter: the text is not a duration.
    """
    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise typer.BadParameter(
            f"{text!r} is not a duration like 90s, 30m, 2h or 1h30m", param_hint="--deadline"
        )
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _report(agent: agent_pb2.AgentInfo) -> None:
    view = agent_to_dict(agent)
    line = f"agent {view['name']}: {view['state']}"
    if view["drain_deadline"]:
        line += f" (drain deadline {view['drain_deadline']})"
    typer.echo(line)


@agents_app.callback()
def agents(ctx: typer.Context, output: ListOutputOption = ListFormat.TABLE) -> None:
    """List the registered agents (name, state, address, capabilities, jobs, heartbeat)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        views = [agent_to_dict(agent) for agent in client.agents()]
    if output is ListFormat.JSON:
        print_json(views)
    else:
        from cli import tables  # rich: only when a table is printed (start-up)

        tables.print_rich(tables.agents_table(views))


@agents_app.command()
def cordon(ctx: typer.Context, name: AgentNameArgument) -> None:
    """Stop scheduling new jobs on an agent (running jobs continue)."""
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        _report(client.cordon(name, cordon=True))


@agents_app.command()
def uncordon(ctx: typer.Context, name: AgentNameArgument) -> None:
    """Schedule jobs on a cordoned agent again."""
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        _report(client.cordon(name, cordon=False))


@agents_app.command()
def drain(
    ctx: typer.Context,
    name: AgentNameArgument,
    deadline: Annotated[
        str,
        typer.Option("--deadline", help="How long running jobs may take: 90s, 30m, 2h, 1h30m, 1d."),
    ] = "2h",
) -> None:
    """Cordon an agent and let its running jobs finish within the deadline."""
    seconds = parse_duration(deadline)
    settings = settings_of(ctx)
    with reporting_errors(settings), settings.connect() as client:
        _report(client.drain(name, deadline_seconds=seconds))
