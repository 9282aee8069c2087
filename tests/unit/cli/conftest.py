"""Fixtures for the client and CLI tests: a JobService double on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest

from protocol.gen.h2k.v1 import services_pb2_grpc
from tests.unit.cli.h2k_cli_doubles import FakeJobService


@dataclass
class RunningDouble:
    service: FakeJobService
    address: str


@pytest.fixture
def control_plane() -> Iterator[RunningDouble]:
    """A FakeJobService served on a free loopback port."""
    service = FakeJobService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    services_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield RunningDouble(service=service, address=f"127.0.0.1:{port}")
    finally:
        server.stop(grace=None)
