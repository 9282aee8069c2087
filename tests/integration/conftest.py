from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.cluster import Cluster, running_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One real control plane and one real agent for the whole integration session."""
    for tool in ("qemu-img", "sfdisk"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make setup`")
    workdir = tmp_path_factory.mktemp("cluster")
    with running_cluster(workdir) as c:
        yield c


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "cluster" in request.fixturenames:
        c: Cluster = request.getfixturevalue("cluster")
        print(c.logs())


@pytest.fixture
def images(cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    """A fresh input sub-directory (inside the agent's allow-list) for one test."""
    d = cluster.input_dir / request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def outdir(cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    d = cluster.output_dir / request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    d.mkdir(parents=True, exist_ok=True)
    return d
