"""The systemd units: valid for systemd, and their command lines parse."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess

import pytest

from agent.main import build_parser as agent_parser
from controlplane.main import parse_args as controlplane_args
from intake.main import build_parser as intake_parser
from intake.main import config_from_args as intake_config
from tests.deploy.conftest import DEPLOY

UNITS = DEPLOY / "systemd"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def _env(name: str) -> dict[str, str]:
    lines = (UNITS / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _argv(unit: configparser.ConfigParser, env: dict[str, str]) -> list[str]:
    command = unit["Service"]["ExecStart"]
    for key, value in env.items():
        command = command.replace(f"${{{key}}}", value)
    return shlex.split(command.replace("%H", "node-1"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize(
    "name",
    ["h2k-controlplane.service", "h2k-agent.service", "hyper2kvm.service", "hyper2kvm@.service"],
)
def test_systemd_accepts_the_unit(name: str) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(UNITS / name)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        # The programs are not installed under /opt/h2k on a test machine.
        if line.strip() and "/opt/h2k/bin/" not in line
    ]
    assert problems == []


def test_the_control_plane_unit_is_unprivileged_and_its_command_parses() -> None:
    unit = _unit("h2k-controlplane.service")
    service = unit["Service"]
    assert service["DynamicUser"] == "yes" and service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    argv = _argv(unit, _env("controlplane.env"))
    assert argv[0] == "/opt/h2k/bin/h2k-controlplane"
    plain = []
    skip = False
    for arg in argv[1:]:  # TLS and roles files are read while parsing: --insecure instead
        if skip:
            skip = False
            continue
        if arg.startswith(("--tls-", "--roles-file")):
            skip = True
            continue
        plain.append(arg)
    args = controlplane_args([*plain, "--insecure"])
    assert args.metrics_listen and args.health_listen


def test_the_agent_unit_loads_nbd_and_waits_for_migrations() -> None:
    unit = _unit("h2k-agent.service")
    service = unit["Service"]
    assert service["ExecStartPre"].split()[1:] == ["nbd", "max_part=16"]
    args = agent_parser().parse_args(_argv(unit, _env("agent.env"))[1:])
    assert int(service["TimeoutStopSec"].removesuffix("s")) > args.shutdown_grace_seconds
    assert args.advertise_address and args.metrics_listen and args.health_listen
    assert "options nbd max_part=16" in (UNITS / "h2k-nbd.conf").read_text()


@pytest.mark.parametrize("name", ["hyper2kvm.service", "hyper2kvm@.service"])
def test_the_intake_units_are_what_hypersdk_looks_for_and_are_hardened(name: str) -> None:
    unit = _unit(name)
    service = unit["Service"]
    assert service["Type"] == "notify" and service["User"] == "hyper2kvm"
    for key, value in {
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/hyper2kvm",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == value, key
    # "$H2K_INTAKE_ARGS" (unbraced) splits into words, as systemd does.
    command = service["ExecStart"].replace("$H2K_INTAKE_ARGS", "${H2K_INTAKE_ARGS}")
    unit["Service"]["ExecStart"] = command.replace("%i", "blue")
    argv = _argv(unit, _env("hyper2kvm.conf"))
    assert argv[0] == "/opt/h2k/bin/h2k-intake"
    config = intake_config(intake_parser().parse_args([*argv[1:], "--insecure"]))
    assert config.control_plane == "controlplane.example.internal:50051"
    assert config.default_network is not None
    (pair,) = config.queues
    if name == "hyper2kvm.service":
        assert (str(pair.queue), str(pair.output)) == (
            "/var/lib/hyper2kvm/queue",
            "/var/lib/hyper2kvm/output",
        )
    else:
        assert (str(pair.queue), str(pair.output)) == (
            "/var/lib/hyper2kvm/blue-queue",
            "/var/lib/hyper2kvm/blue-output",
        )
        files = service.get("EnvironmentFile", "")
        assert "/etc/hyper2kvm/%i.conf" in (UNITS / name).read_text() and files
