"""``h2k-agent``: the privileged node agent's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.server import DEFAULT_STALL_SECONDS, AgentConfig, serve
from runtime.flags import add_operations_arguments, add_timeout_scale_argument
from runtime.health import split_host_port
from runtime.logs import configure_logging
from runtime.tls import TLSConfigError, add_tls_arguments, tls_files_from_args
from runtime.tracing import setup_tracing

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
        "--shutdown-grace-seconds",
        type=float,
        default=25.0,
        metavar="SECONDS",
        help="on SIGTERM, how long running jobs may finish before they are cancelled and "
        "requeued (keep it below Kubernetes' terminationGracePeriodSeconds)",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=DEFAULT_STALL_SECONDS,
        metavar="SECONDS",
        help="kill a conversion (and fail it as retryable, STALLED) when its progress has "
        "not moved for this long: a hung NFS or FUSE read; 0 turns the watch off",
    )
    add_timeout_scale_argument(parser)
    add_tls_arguments(parser)
    parser.add_argument(
        "--control-plane-identity",
        default="h2k-controlplane",
        metavar="SAN",
        help="Worker calls are served only to a peer whose certificate has this SAN",
    )
    parser.add_argument(
        "--advertise-address",
        metavar="HOST:PORT",
        help="address the control plane dials (default: --listen)",
    )
    add_operations_arguments(parser)
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
        tls=tls_files_from_args(args),
        control_plane_identity=args.control_plane_identity,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        timeout_scale=args.timeout_scale,
        stall_seconds=args.stall_seconds or None,
        metrics_listen=args.metrics_listen,
        health_listen=args.health_listen,
    )


async def _run(config: AgentConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the agent until SIGTERM/SIGINT (then exit 0)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except TLSConfigError as exc:
        parser.error(str(exc))
    if args.metrics_listen is not None:
        try:
            split_host_port(args.metrics_listen)
        except ValueError as exc:
            parser.error(f"--metrics-listen: {exc}")
    configure_logging(
        args.log_level,
        args.log_format,
        "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    setup_tracing("h2k-agent", asyncio_client=True)
    if config.tls is None:
        log.warning(
            "gRPC is plaintext (--insecure): anyone who can reach %s can run jobs", args.listen
        )
    if not args.allow_input or not args.allow_output:
        log.warning("no --allow-input or --allow-output given: every job will be refused")
    asyncio.run(_run(config))
    sys.exit(0)


if __name__ == "__main__":
    main()
