"""Command-line flags every h2k server shares: logging, metrics, the health port, test scaling."""

from __future__ import annotations

import argparse

from runtime.logs import LOG_FORMATS, LOG_LEVELS


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


def add_timeout_scale_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--timeout-scale`` (tests only): both servers scale job timeouts alike."""
    parser.add_argument(
        "--timeout-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="FOR TESTS ONLY: multiply every job's timeout_seconds (default 1)",
    )
