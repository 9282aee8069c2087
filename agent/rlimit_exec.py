"""Exec shim: set resource limits, then replace this process with the real command.

Used by :mod:`agent.proc` as ``python -m agent.rlimit_exec --as BYTES --cpu SECONDS -- argv``;
limits set here are inherited by the program because exec keeps them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys


def main(args: list[str] | None = None) -> None:
    """Apply the limits and exec the command (never returns on success)."""
    parser = argparse.ArgumentParser(prog="rlimit_exec")
    parser.add_argument("--as", dest="address_space", type=int)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(args)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not command:
        parser.error("no command given")
    if ns.address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (ns.address_space, ns.address_space))
    if ns.cpu is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (ns.cpu, ns.cpu))
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"rlimit_exec: cannot run {command[0]}: {exc}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
