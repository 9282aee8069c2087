"""A real control plane and agent talking mutual TLS, with a roles file, for the whole suite."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.cluster import Cluster, free_port
from devsupport.pki import ClusterPKI

# Identities the role tests use (the roles file also has admin and node-*).
ROLES = {
    "vera": ["viewer"],
    "sam": ["submitter"],
    "sue": ["submitter"],
    "ci-bot": ["submitter"],
}
# The token of the ci-bot service account and its sha256 (what the roles file lists).
CI_TOKEN = "test-token-for-ci-bot"
MAX_STREAMS = 3


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPKI:
    pki = ClusterPKI.create(tmp_path_factory.mktemp("pki"), ROLES)
    book = json.loads(pki.roles_file.read_text())
    book["tokens"] = {"ci-bot": hashlib.sha256(CI_TOKEN.encode()).hexdigest()}
    pki.roles_file.write_text(json.dumps(book))
    return pki


@pytest.fixture(scope="session")
def token_address() -> str:
    """The control plane's second port: TLS without client certificates, bearer tokens."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory, pki: ClusterPKI, token_address: str
) -> Iterator[Cluster]:
    """Control plane (mTLS, roles file, token port, 3 streams per client) and agent node-1."""
    for tool in ("qemu-img", "sfdisk"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make setup`")
    cluster = Cluster(tmp_path_factory.mktemp("tls-cluster"), pki=pki)
    try:
        cluster.start_controlplane(
            "--token-listen",
            token_address,
            "--max-streams-per-client",
            str(MAX_STREAMS),
        )
        cluster.start_agent("node-1")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "tls_cluster" in request.fixturenames:
        print(request.getfixturevalue("tls_cluster").logs())


def _dir_for(base: Path, request: pytest.FixtureRequest) -> Path:
    name = request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def images(tls_cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    """A fresh directory inside the agent's --allow-input."""
    return _dir_for(tls_cluster.input_dir, request)


@pytest.fixture
def outdir(tls_cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    """A fresh directory inside the agent's --allow-output."""
    return _dir_for(tls_cluster.output_dir, request)
