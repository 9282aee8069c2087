"""Fault injection on real processes: a fresh cluster per test, SIGKILL rather than stops.

Every test gets its own control plane and agents (it kills them); the slow source image is
built once per session and hard-linked into each cluster's input directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.cluster import Cluster
from tests.support.faults import FaultCluster


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
