"""Boot-check tests: real Debian 12 guests (tests/support/debian_guests.py) booted under QEMU.

They need what tests/privileged needs, plus debootstrap, GRUB's images, mtools, QEMU and OVMF
(the root conftest skips them otherwise). The guests are built once per machine and cached.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.cluster import Cluster, running_cluster


@pytest.fixture(scope="module")
def boot_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane and one agent of this test module's own."""
    with running_cluster(tmp_path_factory.mktemp("boot")) as cluster:
        yield cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "boot_cluster" in item.fixturenames:
        cluster: Cluster = item.funcargs["boot_cluster"]  # type: ignore[attr-defined]
        print(cluster.logs())


@pytest.fixture
def outdir(boot_cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    name = request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    directory = boot_cluster.output_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory
