"""Command-line flags every h2k server shares: logging, metrics and the probe-only health port."""

from __future__ import annotations

import argparse

from protocol.logs import LOG_FORMATS, LOG_LEVELS


def add_operations_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level``, ``--log-format``, ``--metrics-listen`` and ``--health-listen``."""
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    parser.add_argument(
        "--log-format", default="text", choices=LOG_FORMATS, help="text lines or JSON objects"
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: none)",
    )
    parser.add_argument(
        "--health-listen",
        metavar="HOST:PORT",
        help="also serve grpc.health.v1 alone, in plaintext, here (Kubernetes gRPC probes)",
    )
