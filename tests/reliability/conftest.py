"""Fault injection on real processes: a fresh cluster per test, SIGKILL rather than stops.

Every test gets its own control plane and agents (it kills them); the slow source image is
built once per session and hard-linked into each cluster's input directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.faults import SLOW_IMAGE_MIB, FaultCluster, write_random_raw
from tests.support.cluster import Cluster

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="session")
def slow_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Incompressible raw data: a compressed qcow2 conversion of it takes ~4 s here."""
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is not installed: run `make setup`")
    path = tmp_path_factory.mktemp("sources") / "slow.img"
    write_random_raw(path, SLOW_IMAGE_MIB)
    return path


@pytest.fixture
def faults(tmp_path: Path, slow_source: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A cluster (nothing started yet) whose input directory holds ``slow.img``."""
    cluster = FaultCluster(tmp_path / "cluster")
    os.link(slow_source, cluster.input_dir / "slow.img")
    try:
        yield cluster
    finally:
        cluster.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cluster.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
