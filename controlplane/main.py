"""``h2k-controlplane``: run the control plane until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from controlplane.server import ControlPlane, ControlPlaneConfig
from controlplane.store import store_for_url

log = logging.getLogger("controlplane")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (argparse exits with status 2 on a bad one)."""
    parser = argparse.ArgumentParser(
        prog="h2k-controlplane", description="The h2k control plane (JobService, AgentRegistry)."
    )
    parser.add_argument("--listen", default="127.0.0.1:50051", help="host:port to serve on")
    parser.add_argument(
        "--db", required=True, help="job store URL, e.g. sqlite:///var/lib/h2k/h2k.db"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="serve plaintext gRPC (no TLS; required for now)"
    )
    parser.add_argument("--heartbeat-interval", type=int, default=5, metavar="SECONDS")
    parser.add_argument("--lease-seconds", type=int, default=15, metavar="SECONDS")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    if not args.insecure:
        parser.error("TLS is not implemented yet: pass --insecure to serve plaintext gRPC")
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
    await stopping.wait()
    log.info("stop requested listen=%s", config.listen)
    await control_plane.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    log.warning("serving plaintext gRPC (--insecure): use only on a trusted network")
    config = ControlPlaneConfig(
        listen=args.listen,
        db_url=args.db,
        heartbeat_interval_seconds=args.heartbeat_interval,
        lease_seconds=args.lease_seconds,
    )
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
