"""Privileged tests: real loop devices, FUSE exports and mounts. They need root.

The root conftest marks them ``privileged`` and skips them where root, the devices or the tools
are missing (tests/support/host.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.cluster import Cluster, running_cluster


@pytest.fixture(scope="module")
def repair_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane and one agent of this test module's own."""
    workdir = tmp_path_factory.mktemp("repair")
    with running_cluster(workdir) as cluster:
        yield cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "repair_cluster" in item.fixturenames:
        cluster: Cluster = item.funcargs["repair_cluster"]  # type: ignore[attr-defined]
        print(cluster.logs())


@pytest.fixture
def outdir(repair_cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    name = request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    directory = repair_cluster.output_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory
