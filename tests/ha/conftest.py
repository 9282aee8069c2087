"""Replicas on a real PostgreSQL: one server per session, a fresh database per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha.harness import ReplicaCluster
from tests.reliability.faults import SLOW_IMAGE_MIB, write_random_raw
from tests.support.postgres import PostgresServer, started_server

pytestmark = pytest.mark.ha


@pytest.fixture(scope="session")
def ha_postgres() -> Iterator[PostgresServer]:
    server = started_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def ha_slow_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Incompressible raw data: a compressed qcow2 conversion of it takes a few seconds."""
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is not installed: run `make setup`")
    path = tmp_path_factory.mktemp("ha-sources") / "slow.img"
    write_random_raw(path, SLOW_IMAGE_MIB)
    return path


@pytest.fixture
def replicas(
    tmp_path: Path,
    ha_postgres: PostgresServer,
    ha_slow_source: Path,
    request: pytest.FixtureRequest,
) -> Iterator[ReplicaCluster]:
    """A cluster with nothing started; its input directory holds ``slow.img`` and a 1 MiB
    ``tiny.img``."""
    cluster = ReplicaCluster(tmp_path / "cluster")
    cluster.postgres = ha_postgres
    cluster.db_url = ha_postgres.create_database()
    os.link(ha_slow_source, cluster.input_dir / "slow.img")
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
