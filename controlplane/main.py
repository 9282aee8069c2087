"""``h2k-controlplane``: run the control plane until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from controlplane.auth import DEFAULT_MAX_STREAMS_PER_CLIENT, RoleBook
from controlplane.events import DEFAULT_BUFFER
from controlplane.server import ControlPlane, ControlPlaneConfig
from controlplane.store import store_for_url
from runtime.collector import settle_after_start
from runtime.flags import add_operations_arguments, add_timeout_scale_argument
from runtime.health import split_host_port
from runtime.logs import configure_logging
from runtime.tls import TLSConfigError, add_tls_arguments, tls_files_from_args
from runtime.tracing import setup_tracing

log = logging.getLogger("controlplane")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (argparse exits with status 2 on a bad one)."""
    parser = argparse.ArgumentParser(
        prog="h2k-controlplane", description="The h2k control plane (JobService, AgentRegistry)."
    )
    parser.add_argument("--listen", default="127.0.0.1:50051", help="host:port to serve on")
    parser.add_argument(
        "--db",
        # From the environment, a password stays out of the command line (a Secret in k8s).
        required=not os.environ.get("H2K_DB"),
        default=os.environ.get("H2K_DB") or None,
        help="job store URL: sqlite:///var/lib/h2k/h2k.db (one control plane) or "
        "postgresql://user:password@host/db (several replicas); $H2K_DB",
    )
    parser.add_argument(
        "--stream-lease-seconds",
        type=float,
        default=ControlPlaneConfig.stream_lease_seconds,
        metavar="SECONDS",
        help="with PostgreSQL: a replica that stops renewing its job streams (it died) has "
        "them taken over by another after this long",
    )
    add_tls_arguments(parser)
    parser.add_argument(
        "--roles-file",
        type=Path,
        default=os.environ.get("H2K_ROLES_FILE") or None,
        metavar="FILE",
        help="YAML: identities -> roles, service-account tokens (see controlplane/auth.py); "
        "$H2K_ROLES_FILE",
    )
    parser.add_argument(
        "--token-listen",
        metavar="HOST:PORT",
        help="also serve TLS without client certificates here, for bearer-token accounts",
    )
    parser.add_argument(
        "--max-streams-per-client",
        type=int,
        default=DEFAULT_MAX_STREAMS_PER_CLIENT,
        metavar="N",
        help="open WatchJob streams one client may hold (more: RESOURCE_EXHAUSTED)",
    )
    parser.add_argument("--heartbeat-interval", type=int, default=5, metavar="SECONDS")
    parser.add_argument("--lease-seconds", type=int, default=15, metavar="SECONDS")
    parser.add_argument(
        "--retry-backoff-seconds",
        type=float,
        default=ControlPlaneConfig.retry_backoff_seconds,
        metavar="SECONDS",
        help="pause before a job's first retry; it doubles with each further retry",
    )
    parser.add_argument(
        "--timeout-margin-seconds",
        type=float,
        default=ControlPlaneConfig.timeout_margin_seconds,
        metavar="SECONDS",
        help="a job running this long past its timeout_seconds is failed by the control plane",
    )
    add_timeout_scale_argument(parser)
    parser.add_argument(
        "--watch-buffer",
        type=int,
        default=DEFAULT_BUFFER,
        metavar="EVENTS",
        help="live events buffered per watcher; a slower watcher re-reads from the store",
    )
    add_operations_arguments(parser)
    args = parser.parse_args(argv)
    if args.metrics_listen is not None:
        try:
            split_host_port(args.metrics_listen)
        except ValueError as exc:
            parser.error(f"--metrics-listen: {exc}")
    try:
        args.tls = tls_files_from_args(args)
    except TLSConfigError as exc:
        parser.error(str(exc))
    args.roles = RoleBook()
    if args.tls is not None:
        if args.roles_file is None:
            parser.error(
                "no --roles-file (or $H2K_ROLES_FILE): with TLS every call needs a role; "
                "or pass --insecure"
            )
        try:
            args.roles = RoleBook.load(args.roles_file)
        except (OSError, ValueError) as exc:
            parser.error(f"--roles-file: {exc}")
    if args.max_streams_per_client < 1:
        parser.error("--max-streams-per-client must be at least 1")
    if args.heartbeat_interval < 1 or args.lease_seconds <= args.heartbeat_interval:
        parser.error("--lease-seconds must be longer than --heartbeat-interval (both >= 1)")
    try:
        store_for_url(args.db)
    except ValueError as exc:
        parser.error(str(exc))
    return args


async def serve(config: ControlPlaneConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    control_plane = ControlPlane(config)
    await control_plane.start()
    settle_after_start()  # after start-up: what it allocated lives as long as the process
    await stopping.wait()
    log.info("stop requested listen=%s", config.listen)
    await control_plane.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = parse_args(argv)
    configure_logging(
        args.log_level, args.log_format, "%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    setup_tracing("h2k-controlplane", asyncio_client=True)
    if args.tls is None:
        log.warning(
            "serving plaintext gRPC without authentication (--insecure): every caller is an "
            "admin; use only on a trusted network"
        )
    config = ControlPlaneConfig(
        listen=args.listen,
        db_url=args.db,
        heartbeat_interval_seconds=args.heartbeat_interval,
        lease_seconds=args.lease_seconds,
        retry_backoff_seconds=args.retry_backoff_seconds,
        timeout_margin_seconds=args.timeout_margin_seconds,
        timeout_scale=args.timeout_scale,
        watch_buffer=args.watch_buffer,
        tls=args.tls,
        roles=args.roles,
        max_streams_per_client=args.max_streams_per_client,
        token_listen=args.token_listen if args.tls is not None else None,
        metrics_listen=args.metrics_listen,
        health_listen=args.health_listen,
        stream_lease_seconds=args.stream_lease_seconds,
    )
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
