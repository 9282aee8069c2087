"""Replicas on a real PostgreSQL: one server per session, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.images import write_random_raw
from tests.ha.harness import ReplicaCluster
from tests.support.postgres import PostgresServer, started_server


@pytest.fixture(scope="session")
def ha_postgres() -> Iterator[PostgresServer]:
    server = started_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def replicas(
    tmp_path: Path,
    ha_postgres: PostgresServer,
    slow_source: Path,
    request: pytest.FixtureRequest,
) -> Iterator[ReplicaCluster]:
    """A cluster with nothing started; its input directory holds ``slow.img`` and a 1 MiB
    ``tiny.img``."""
    cluster = ReplicaCluster(tmp_path / "cluster")
    cluster.postgres = ha_postgres
    cluster.db_url = ha_postgres.create_database()
    os.link(slow_source, cluster.input_dir / "slow.img")
    write_random_raw(cluster.input_dir / "tiny.img", 1)
    try:
        yield cluster
    finally:
        cluster.stop()
        # A test that stopped the server must not leave it down for the next one.
        if not ha_postgres.accepts():
            ha_postgres.start()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cluster.logs())
