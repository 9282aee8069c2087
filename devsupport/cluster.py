"""Start real h2k-controlplane and h2k-agent processes on free loopback ports.

Used by the tests, the demo and the benchmarks. Everything runs as real processes; the
harness only starts them, waits for their health service, and stops them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devsupport.pki import ClusterPKI

BIN = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}: {last_error}")


def is_serving(address: str, credentials: grpc.ChannelCredentials | None = None) -> bool:
    if credentials is None:
        opened = grpc.insecure_channel(address)
    else:
        opened = grpc.secure_channel(address, credentials)
    with opened as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the process itself (a crash: no cleanup; its tools' own groups live on)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        return self.popen.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    """A control plane and its agents in one work directory."""

    workdir: Path
    input_dir: Path = field(init=False)
    output_dir: Path = field(init=False)
    address: str = field(init=False)
    controlplane: Process | None = None
    agents: dict[str, Process] = field(default_factory=dict)
    agent_addresses: dict[str, str] = field(default_factory=dict)
    # Mutual TLS with these certificates; None runs everything with --insecure.
    pki: ClusterPKI | None = None
    # The extra arguments each process was started with, for restarts.
    controlplane_args: tuple[str, ...] = ()
    agent_args: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    # The job store of the control plane(s); None: a SQLite file in the work directory.
    db_url: str | None = None

    def __post_init__(self) -> None:
        self.input_dir = self.workdir / "input"
        self.output_dir = self.workdir / "output"
        for d in (self.input_dir, self.output_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.address = f"127.0.0.1:{free_port()}"

    def start_controlplane(self, *extra: str) -> Process:
        self.controlplane_args = extra
        db = self.workdir / "cp" / "h2k.db"
        proc = Process(
            "controlplane",
            [
                str(BIN / "h2k-controlplane"),
                "--listen",
                self.address,
                "--db",
                self.db_url or f"sqlite:///{db}",
                *self._security_args(),
                "--heartbeat-interval",
                "1",
                "--lease-seconds",
                "5",
                *extra,
            ],
            self.workdir / "controlplane.log",
        )
        proc.start()
        self.controlplane = proc
        wait_for(
            lambda: is_serving(self.address, self._credentials()),
            what="control plane health",
            timeout=30,
        )
        return proc

    def start_agent(self, name: str = "node-1", *extra: str, max_jobs: int = 2) -> Process:
        self.agent_args[name] = (extra, max_jobs)
        address = self.agent_addresses.get(name) or f"127.0.0.1:{free_port()}"
        self.agent_addresses[name] = address
        proc = Process(
            name,
            [
                str(BIN / "h2k-agent"),
                "--control-plane",
                self.address,
                "--listen",
                address,
                "--node-name",
                name,
                "--state-dir",
                str(self.workdir / name),
                "--allow-input",
                str(self.input_dir),
                "--allow-output",
                str(self.output_dir),
                "--max-concurrent-jobs",
                str(max_jobs),
                *self._security_args(name),
                *extra,
            ],
            self.workdir / f"{name}.log",
        )
        proc.start()
        self.agents[name] = proc
        wait_for(
            lambda: is_serving(address, self._credentials(name)),
            what=f"agent {name} health",
            timeout=60,
        )
        wait_for(lambda: name in self.ready_agents(), what=f"agent {name} registered")
        return proc

    def restart_controlplane(self) -> Process:
        """Start the control plane again on the same address and database."""
        return self.start_controlplane(*self.controlplane_args)

    def restart_agent(self, name: str) -> Process:
        """Start an agent again with the same name, address, state directory and flags."""
        extra, max_jobs = self.agent_args[name]
        return self.start_agent(name, *extra, max_jobs=max_jobs)

    def ready_agents(self) -> set[str]:
        agents = json.loads(self.h2kctl("agents", "-o", "json", check=True).stdout)
        return {a["name"] for a in agents if a.get("state") == "READY"}

    def h2kctl(
        self, *args: str, check: bool = False, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "h2kctl"), "--server", self.address, *self._client_args(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"h2kctl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def client(self) -> Any:
        from client import H2KClient

        if self.pki is not None:
            return H2KClient(self.address, insecure=False, credentials=self.pki.credentials())
        return H2KClient(self.address, insecure=True)

    def _security_args(self, agent: str | None = None) -> list[str]:
        if self.pki is None:
            return ["--insecure"]
        if agent is None:
            args = self.pki.args(self.pki.controlplane)
            return [*args, "--roles-file", str(self.pki.roles_file)]
        return self.pki.args(self.pki.client(agent))

    def _client_args(self) -> list[str]:
        return ["--insecure"] if self.pki is None else self.pki.args(self.pki.admin)

    def _credentials(self, agent: str | None = None) -> grpc.ChannelCredentials | None:
        if self.pki is None:
            return None
        return self.pki.credentials(self.pki.client(agent) if agent else self.pki.admin)

    def write_job(self, doc: dict[str, Any]) -> Path:
        path = self.workdir / "jobs" / f"{doc['job_id']}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(doc, indent=2))
        return path

    def logs(self) -> str:
        parts = []
        for proc in [self.controlplane, *self.agents.values()]:
            if proc is not None:
                parts.append(f"----- {proc.name} -----\n{proc.log()[-6000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.agents.values():
            proc.stop()
        if self.controlplane is not None:
            self.controlplane.stop()


@contextmanager
def running_cluster(workdir: Path, agents: tuple[str, ...] = ("node-1",)) -> Iterator[Cluster]:
    cluster = Cluster(workdir)
    try:
        cluster.start_controlplane()
        for name in agents:
            cluster.start_agent(name)
        yield cluster
    finally:
        cluster.stop()
