"""``h2k-agent``: the privileged node agent's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.server import AgentConfig, serve

log = logging.getLogger("agent")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h2k-agent", description="h2k node agent: runs disk jobs for the control plane."
    )
    parser.add_argument("--control-plane", required=True, metavar="HOST:PORT")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument(
        "--allow-input",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="directory jobs may read images from (repeatable)",
    )
    parser.add_argument(
        "--allow-output",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="directory jobs may write to (repeatable)",
    )
    parser.add_argument("--max-concurrent-jobs", type=_positive, default=2)
    parser.add_argument(
        "--insecure", action="store_true", help="plaintext gRPC (TLS is not implemented yet)"
    )
    parser.add_argument(
        "--advertise-address",
        metavar="HOST:PORT",
        help="address the control plane dials (default: --listen)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    return AgentConfig(
        control_plane=args.control_plane,
        listen=args.listen,
        node_name=args.node_name,
        state_dir=args.state_dir,
        allow_input=list(args.allow_input),
        allow_output=list(args.allow_output),
        max_concurrent_jobs=args.max_concurrent_jobs,
        insecure=args.insecure,
        advertise_address=args.advertise_address,
    )


async def _run(config: AgentConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the agent until SIGTERM/SIGINT (then exit 0)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    if not args.insecure:
        build_parser().error("TLS is not implemented yet: pass --insecure")
    log.warning("gRPC is plaintext (--insecure): anyone who can reach %s can run jobs", args.listen)
    if not args.allow_input or not args.allow_output:
        log.warning("no --allow-input or --allow-output given: every job will be refused")
    asyncio.run(_run(config_from_args(args)))
    sys.exit(0)


if __name__ == "__main__":
    main()
