"""Rendered manifests, and the metric names the real programs export."""

from __future__ import annotations

from pathlib import Path

import pytest

from devsupport.cluster import Cluster, free_port
from tests.deploy.kustomize import Object, render
from tests.support.scrape import scrape

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def rendered(overlay: str) -> list[Object]:
    return render(DEPLOY / "overlays" / overlay)


def find(objects: list[Object], kind: str, name: str) -> Object:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


@pytest.fixture(scope="session")
def exported_metrics(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name (with _bucket, _sum, _count, _total) the real processes export."""
    cp_port, agent_port = free_port(), free_port()
    cluster = Cluster(tmp_path_factory.mktemp("deploy-metrics"))
    try:
        cluster.start_controlplane("--metrics-listen", f"127.0.0.1:{cp_port}")
        cluster.start_agent("node-1", "--metrics-listen", f"127.0.0.1:{agent_port}")
        names: set[str] = set()
        for port in (cp_port, agent_port):
            for family in scrape(port).families.values():
                names |= _series_names(family.name, family.type)
        return names
    finally:
        cluster.stop()


def _series_names(family: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{family}_total"}
    if kind == "histogram":
        return {family, *(f"{family}_{suffix}" for suffix in ("bucket", "sum", "count"))}
    return {family}
