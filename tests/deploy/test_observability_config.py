"""Alerts and dashboard panels read only metrics the real programs export."""

from __future__ import annotations

import json

import yaml

from tests.deploy.conftest import DEPLOY
from tests.deploy.promql import metric_names

RULES = DEPLOY / "base" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "h2k-dashboard.json"


def _alert_expressions() -> dict[str, str]:
    rule = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}


def _panel_expressions() -> dict[str, list[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"]}


def test_every_alert_reads_exported_metrics(exported_metrics: set[str]) -> None:
    alerts = _alert_expressions()
    assert len(alerts) >= 5
    for alert, expr in alerts.items():
        names = metric_names(expr)
        assert names, f"{alert}: no metric in {expr!r}"
        assert names <= exported_metrics, f"{alert} reads {names - exported_metrics}"


def test_every_dashboard_query_reads_exported_metrics(exported_metrics: set[str]) -> None:
    panels = _panel_expressions()
    assert len(panels) >= 10
    used: set[str] = set()
    for title, exprs in panels.items():
        assert exprs, f"panel {title!r} has no query"
        for expr in exprs:
            names = metric_names(expr)
            assert names and names <= exported_metrics, f"{title}: {names - exported_metrics}"
            used |= names
    # The dashboard shows every metric the issue names.
    for name in (
        "hyper2kvm_migration_total",
        "hyper2kvm_migration_failures_total",
        "hyper2kvm_migration_duration_seconds_bucket",
        "hyper2kvm_vmdk_size_bytes_bucket",
        "hyper2kvm_worker_capability_info",
        "hyper2kvm_worker_jobs_active",
        "hyper2kvm_conversion_bytes_total",
        "hyper2kvm_jobs",
        "hyper2kvm_agents",
        "grpc_server_handled_total",
    ):
        assert name in used, name


def test_the_metric_check_can_fail(exported_metrics: set[str]) -> None:
    names = metric_names("rate(hyper2kvm_migrations_total[5m]) > 0")
    assert names == {"hyper2kvm_migrations_total"}
    assert not names <= exported_metrics  # a typo (migrations) is caught
