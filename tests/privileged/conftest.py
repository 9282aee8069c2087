"""Privileged tests: real loop devices, FUSE exports and mounts. They need root."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, running_cluster


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (loop devices, mount)"
    for device in ("/dev/fuse", "/dev/loop-control"):
        if not os.path.exists(device):
            return f"{device} is missing"
    for tool in ("qemu-storage-daemon", "qemu-img", "sfdisk", "mkfs.xfs", "mkfs.ext4", "losetup"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run `make setup`"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _missing()
    for item in items:
        if "privileged" in str(item.fspath):
            item.add_marker(pytest.mark.privileged)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


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
