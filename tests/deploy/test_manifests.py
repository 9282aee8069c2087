"""The kustomize output: valid against the Kubernetes schema and shaped as the issue asks."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agent.main import build_parser as agent_parser
from controlplane.main import parse_args as controlplane_args
from intake.main import build_parser as intake_parser
from intake.main import config_from_args as intake_config
from tests.deploy.conftest import DEPLOY, find
from tests.deploy.kustomize import Object, render

KUBERNETES_VERSION = "1.32"
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
}


def _pod(obj: Object) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def _container(obj: Object, name: str) -> dict[str, Any]:
    [container] = [c for c in _pod(obj)["containers"] if c["name"] == name]
    return container


def _flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])


def test_every_core_object_validates_against_the_kubernetes_schema(rendered: list[Object]) -> None:
    core = [o for o in rendered if (o["apiVersion"], o["kind"]) not in CRD_KINDS]
    assert {o["kind"] for o in core} >= {
        "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
        "PodDisruptionBudget", "DaemonSet", "NetworkPolicy",
    }  # fmt: skip
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_can_fail(rendered: list[Object]) -> None:
    broken = copy.deepcopy(find(rendered, "Deployment", "h2k-controlplane"))
    _pod(broken)["containers"][0]["livenessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_custom_resources_are_well_formed(rendered: list[Object]) -> None:
    crds = [o for o in rendered if (o["apiVersion"], o["kind"]) in CRD_KINDS]
    assert {o["kind"] for o in crds} == {k for _, k in CRD_KINDS}
    for obj in crds:
        assert obj["metadata"]["name"] and obj["metadata"]["namespace"]
        assert isinstance(obj["spec"], dict) and obj["spec"]
    issuers = {o["metadata"]["name"] for o in crds if o["kind"] == "Issuer"}
    secrets = set()
    for cert in (o for o in crds if o["kind"] == "Certificate"):
        assert cert["spec"]["issuerRef"]["name"] in issuers
        secrets.add(cert["spec"]["secretName"])
    # Every TLS Secret the workloads mount is one a Certificate issues.
    for kind, name in (("Deployment", "h2k-controlplane"), ("DaemonSet", "h2k-agent")):
        mounted = {
            v["secret"]["secretName"]
            for v in _pod(find(rendered, kind, name))["volumes"]
            if "secret" in v
        }
        assert mounted <= secrets
    monitor = next(o for o in crds if o["kind"] == "ServiceMonitor")
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    services = [o for o in rendered if o["kind"] == "Service"]
    assert all(any(p["name"] in ports for p in s["spec"]["ports"]) for s in services)
    rules = next(o for o in crds if o["kind"] == "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "H2KAgentDown", "H2KJobFailures", "H2KSlowMigrations", "H2KQueueStuck",
        "H2KTempSpaceNearlyFull",
    }  # fmt: skip


def test_everything_lives_in_the_overlay_namespace(rendered: list[Object], overlay: str) -> None:
    [namespace] = [o["metadata"]["name"] for o in rendered if o["kind"] == "Namespace"]
    assert namespace == {"dev": "h2k-dev", "prod": "h2k"}[overlay]
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]


def test_the_control_plane_runs_unprivileged(rendered: list[Object], overlay: str) -> None:
    deployment = find(rendered, "Deployment", "h2k-controlplane")
    pod = _pod(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    container = _container(deployment, "controlplane")
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security
    assert not any("hostPath" in v for v in pod["volumes"])
    assert container["image"].startswith("ghcr.io/hyper2kvm/h2k-controlplane:")
    if overlay == "prod":
        # Several replicas share PostgreSQL; its URL (a password) comes from a Secret.
        assert deployment["spec"]["replicas"] >= 2
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        db = {e["name"]: e for e in container["env"]}["H2K_DB"]
        assert db["valueFrom"]["secretKeyRef"] == {"name": "h2k-postgres", "key": "url"}
        assert not any(a.startswith("--db") for a in container["args"])
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
        assert not [
            o
            for o in rendered
            if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"].startswith("h2k-c")
        ]  # the intake's queue and output volumes are not the control plane's
    else:
        # SQLite on one volume: one replica, never two pods at once.
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        assert "PostgreSQL" in (DEPLOY / "base" / "controlplane-deployment.yaml").read_text()
    pdb = find(rendered, "PodDisruptionBudget", "h2k-controlplane")
    labels = pod.get("labels") or deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = find(rendered, "Service", "h2k-controlplane")
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_agent_daemonset_has_what_a_disk_worker_needs(rendered: list[Object]) -> None:
    daemonset = find(rendered, "DaemonSet", "h2k-agent")
    pod = _pod(daemonset)
    assert pod["nodeSelector"] == {"hyper2kvm.io/worker-enabled": "true"}
    [init] = pod["initContainers"]
    assert init["command"] == ["modprobe", "nbd", "max_part=16"]
    assert init["securityContext"]["privileged"] is True
    agent = _container(daemonset, "agent")
    assert agent["securityContext"]["privileged"] is True
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert {"/dev", "/lib/modules"} <= host_paths
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    flags = _flags(agent)
    assert {"/dev", "/lib/modules", flags["state-dir"], flags["allow-input"]} <= mounts
    assert flags["allow-output"] in mounts
    # Long enough for a migration, and longer than the agent's own grace for running jobs.
    assert pod["terminationGracePeriodSeconds"] >= 3600
    assert float(flags["shutdown-grace-seconds"]) < pod["terminationGracePeriodSeconds"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert flags["advertise-address"] == "$(NODE_IP):50052"
    worker = next(p for p in agent["ports"] if p["name"] == "worker")
    assert worker["containerPort"] == worker["hostPort"] == 50052


@pytest.mark.parametrize(("kind", "name", "container"), [
    ("Deployment", "h2k-controlplane", "controlplane"), ("DaemonSet", "h2k-agent", "agent"),
])  # fmt: skip
def test_grpc_probes_ask_the_health_port(
    rendered: list[Object], kind: str, name: str, container: str
) -> None:
    spec = _container(find(rendered, kind, name), container)
    health_port = int(_flags(spec)["health-listen"].rsplit(":", 1)[1])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert spec[probe]["grpc"]["port"] == health_port, probe
    # Readiness asks the overall status ("" service); the agent's liveness only "liveness".
    assert spec["readinessProbe"]["grpc"].get("service", "") == ""
    if kind == "DaemonSet":
        assert spec["livenessProbe"]["grpc"]["service"] == "liveness"


def test_only_the_control_plane_reaches_the_agents_worker_port(rendered: list[Object]) -> None:
    policy = find(rendered, "NetworkPolicy", "h2k-agent-ingress")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "h2k-agent"}
    worker_rules = [
        rule
        for rule in policy["spec"]["ingress"]
        if {"protocol": "TCP", "port": 50052} in rule["ports"]
    ]
    assert len(worker_rules) == 1
    assert worker_rules[0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "h2k-controlplane"}}}
    ]


def _expand(arg: str, env: dict[str, str]) -> str:
    for key, value in env.items():
        arg = arg.replace(f"$({key})", value)
    return arg


def test_the_programs_accept_every_argument_the_manifests_pass(
    rendered: list[Object], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = find(rendered, "ConfigMap", "h2k-config")["data"]
    env = {**config, "NODE_IP": "192.0.2.10", "NODE_NAME": "node-1"}
    cp = _container(find(rendered, "Deployment", "h2k-controlplane"), "controlplane")
    if any(e["name"] == "H2K_DB" for e in cp.get("env", [])):
        # What the Secret would hold.
        monkeypatch.setenv("H2K_DB", "postgresql://h2k:secret@postgres.db:5432/h2k")
    cp_args = [_expand(a, env) for a in cp["args"]]
    # The control plane reads its TLS and roles files while parsing: parse the rest, with
    # --insecure in their place.
    plain = [a for a in cp_args if not a.startswith(("--tls-", "--roles-file"))]
    args = controlplane_args([*plain, "--insecure"])
    assert args.metrics_listen == "0.0.0.0:9090" and args.health_listen == "0.0.0.0:50061"
    assert args.log_format == config["H2K_LOG_FORMAT"]
    agent = _container(find(rendered, "DaemonSet", "h2k-agent"), "agent")
    agent_args = agent_parser().parse_args([_expand(a, env) for a in agent["args"]])
    assert agent_args.advertise_address == "192.0.2.10:50052"
    assert agent_args.node_name == "node-1"
    roles = yaml.safe_load(config["roles.yaml"])
    assert roles["identities"]["h2k-agent"] == ["agent"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_renderer_agrees_with_kubectl_kustomize(overlay: str, rendered: list[Object]) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True, text=True, check=True, timeout=60,
        env={**os.environ, "KUBECONFIG": "/dev/null"},
    ).stdout  # fmt: skip

    def key(o: Object) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    theirs = sorted((d for d in yaml.safe_load_all(out) if d), key=key)
    assert sorted(rendered, key=key) == theirs


def test_base_renders_too() -> None:
    objects = render(DEPLOY / "base")
    assert find(objects, "Namespace", "h2k")


def test_the_intake_serves_its_volumes_unprivileged_as_a_submitter(rendered: list[Object]) -> None:
    deployment = find(rendered, "Deployment", "h2k-intake")
    pod = _pod(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    container = _container(deployment, "intake")
    assert container["command"] == ["h2k-intake"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    config = find(rendered, "ConfigMap", "h2k-config")["data"]
    args = [_expand(a, config) for a in container["args"]]
    plain = [a for a in args if not a.startswith("--tls-")]  # the files are not here
    parsed = intake_parser().parse_args([*plain, "--insecure"])
    intake = intake_config(parsed)
    (pair,) = intake.queues
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for directory in (pair.queue, pair.output):
        claim = volumes[mounts[str(directory)]]["persistentVolumeClaim"]["claimName"]
        pvc = find(rendered, "PersistentVolumeClaim", claim)
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # shared with HyperSDK, agents
    assert str(intake.state_dir) in mounts
    roles = yaml.safe_load(config["roles.yaml"])
    assert roles["identities"]["h2k-intake"] == ["submitter"]
