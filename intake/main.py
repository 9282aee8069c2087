"""``h2k-intake``: HyperSDK's daemon mode for h2k (``hyper2kvm.service``).

Watches queue directories for Artifact Manifests, migrates each through the control plane and
answers HyperSDK with ``<output>/<vm>.qcow2`` or ``<output>/<vm>.error``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from client import H2KClient
from intake.config import (
    BASE_DIR,
    IntakeConfig,
    default_network_of,
    networks_of,
    queues_of,
)
from intake.service import IntakeService
from migration.model import MigrationProblem
from runtime.flags import add_operations_arguments
from runtime.logs import configure_logging
from runtime.tls import TLSConfigError, add_tls_arguments, client_credentials

log = logging.getLogger("intake")
ENV_CONTROL_PLANE = "H2K_CONTROL_PLANE"


def _seconds(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h2k-intake",
        description="HyperSDK daemon mode: migrate every manifest dropped into a queue "
        "directory through the h2k control plane.",
    )
    parser.add_argument(
        "--control-plane",
        default=os.environ.get(ENV_CONTROL_PLANE) or None,
        metavar="HOST:PORT",
        help=f"the control plane; ${ENV_CONTROL_PLANE}",
    )
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="DIR=OUTPUT_DIR",
        help="a queue directory and where its migrations write (repeatable)",
    )
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="NAME",
        help="HyperSDK's named instance: <base>/NAME-queue and <base>/NAME-output (repeatable)",
    )
    parser.add_argument(
        "--base-dir",
        type=Path,
        default=BASE_DIR,
        help=f"where the default and instance directories are (default {BASE_DIR})",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the intake's own state (default <base>/intake-state)",
    )
    parser.add_argument("--settle-seconds", type=_seconds, default=2.0)
    parser.add_argument("--grace-seconds", type=_seconds, default=300.0)
    parser.add_argument("--poll-seconds", type=_seconds, default=1.0)
    parser.add_argument(
        "--follow-seconds",
        type=_seconds,
        default=1.0,
        help="how often a running migration is asked for its state",
    )
    parser.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="SOURCE=network:NAME|bridge:NAME[,pod|multus:NAME]",
        help="where a source network goes (repeatable)",
    )
    parser.add_argument(
        "--default-network",
        metavar="network:NAME|bridge:NAME[,pod|multus:NAME]",
        help="target of every source network no --network names",
    )
    parser.add_argument(
        "--replace-existing",
        action="store_true",
        help="move an earlier run's outputs of a VM to <output>/replaced/<date>/ instead of "
        "refusing the new manifest",
    )
    parser.add_argument(
        "--no-inotify", action="store_true", help="poll only (inotify is used when it works)"
    )
    add_tls_arguments(parser)
    add_operations_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> IntakeConfig:
    """The configuration the options describe.

    Raises:
        MigrationProblem: a bad --queue, --instance or --network.
    """
    queues = queues_of(args.queue, args.instance, args.base_dir)
    state_dir = args.state_dir or args.base_dir / (
        f"{args.instance[0]}-intake-state" if args.instance and not args.queue else "intake-state"
    )
    return IntakeConfig(
        control_plane=args.control_plane,
        queues=queues,
        state_dir=state_dir,
        settle_seconds=args.settle_seconds,
        grace_seconds=args.grace_seconds,
        poll_seconds=args.poll_seconds,
        follow_seconds=args.follow_seconds,
        replace_existing=args.replace_existing,
        networks=networks_of(args.network),
        default_network=default_network_of(args.default_network),
        use_inotify=not args.no_inotify,
    )


def connect(args: argparse.Namespace) -> H2KClient:
    if args.insecure:
        return H2KClient(args.control_plane, insecure=True, timeout=15.0)
    if args.tls_ca is None or args.tls_cert is None or args.tls_key is None:
        raise TLSConfigError(
            "give --tls-cert, --tls-key and --tls-ca ($H2K_TLS_CERT, $H2K_TLS_KEY, "
            "$H2K_TLS_CA), or --insecure for plaintext"
        )
    credentials = client_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    return H2KClient(args.control_plane, insecure=False, timeout=15.0, credentials=credentials)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve the queues until SIGTERM/SIGINT (then exit 0)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.control_plane:
        parser.error(f"--control-plane (or ${ENV_CONTROL_PLANE}) is required")
    try:
        config = config_from_args(args)
        client = connect(args)
    except MigrationProblem as problem:
        parser.error("; ".join(problem.problems))
    except TLSConfigError as error:
        parser.error(str(error))
    configure_logging(
        args.log_level,
        args.log_format,
        "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    if args.insecure:
        log.warning("gRPC to the control plane is plaintext (--insecure)")
    service = IntakeService(config, client)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: service.request_stop())
    try:
        service.run()
    finally:
        client.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
