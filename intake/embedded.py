"""A private control plane and one local agent, for ``hyper2kvm`` without ``H2K_SERVER``.

:func:`embedded_cluster` starts the real ``h2k-controlplane`` (a SQLite store in a temporary
directory) and one ``h2k-agent`` that may read only the given input directories and write only
the given output directories, both in plaintext on loopback (``--insecure``: nothing else on
the host should be able to reach them, so they listen on 127.0.0.1 only). It waits until both
answer the gRPC health service and the agent is registered READY, yields the control plane's
address, and on every way out (an error, Ctrl-C, SIGTERM turned into an exception by the
caller) stops both — SIGTERM, then SIGKILL of the process group after a grace — and removes
the temporary directory.

Ports: the control plane can bind port 0 but only reports the port it got in a log line, and
the agent must be told the control plane's address on its command line, so a free loopback
port is picked here; if another program takes it first, the process exits before it is
healthy and the start is retried on another port.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import H2KClient
from protocol.errors import H2KError
from protocol.gen.h2k.v1 import agent_pb2

NODE_NAME = "hyper2kvm-local"
START_ATTEMPTS = 3
CONTROLPLANE_READY_SECONDS = 30.0
AGENT_READY_SECONDS = 60.0
STOP_GRACE_SECONDS = 15.0
# On SIGTERM the agent lets running jobs finish this long before cancelling them; a direct run
# that is being stopped wants them cancelled at once.
AGENT_SHUTDOWN_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.1
LOG_TAIL_CHARS = 2000


class EmbeddedStartError(Exception):
    """The embedded control plane or agent did not become ready; the message says which."""


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def program(name: str, module: str) -> list[str]:
    """The argv prefix of an h2k console script: the one installed beside this interpreter,
    else one on PATH, else ``python -m module``."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", module]


@dataclass
class ChildProcess:
    """One started server: its argv, its log file, the running process."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C at the terminal reaches hyper2kvm alone, which then
            # stops the servers in order (cancel the migration first, then SIGTERM).
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def exited(self) -> int | None:
        """The exit status, or None while it runs."""
        return None if self.popen is None else self.popen.poll()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, wait ``grace`` seconds, then SIGKILL its whole process group."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-LOG_TAIL_CHARS:].strip()


def is_serving(address: str) -> bool:
    """Whether the gRPC health service at ``address`` answers SERVING (plaintext)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def agent_is_ready(controlplane: str, node_name: str) -> bool:
    """Whether the control plane lists ``node_name`` as READY."""
    try:
        with H2KClient(controlplane, insecure=True, timeout=2.0) as client:
            agents = client.agents()
    except H2KError:
        return False
    return any(a.name == node_name and a.state == agent_pb2.AGENT_STATE_READY for a in agents)


def wait_until_ready(
    process: ChildProcess, ready: Callable[[], bool], deadline_seconds: float
) -> bool:
    """Poll ``ready()`` until it is true (True), or the process exits or the deadline passes
    (False)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.exited() is not None:
            return False
        if ready():
            return True
        time.sleep(POLL_SECONDS)  # polling a starting server, not synchronising
    return False


def _not_ready(process: ChildProcess, seconds: float) -> EmbeddedStartError:
    status = process.exited()
    how = f"exited with status {status}" if status is not None else f"not ready in {seconds:.0f}s"
    tail = process.log_tail()
    return EmbeddedStartError(
        f"embedded {process.name} {how}" + (f"; its log ends:\n{tail}" if tail else "")
    )


def start_on_free_port(
    make: Callable[[str], ChildProcess],
    ready: Callable[[str], bool],
    deadline_seconds: float,
    started: list[ChildProcess],
) -> str:
    """Start ``make(address)`` on a fresh loopback port until ``ready(address)``.

    A process that exits before it is ready (another program took the port) is started again
    on another port, up to :data:`START_ATTEMPTS` times. Every process started is appended to
    ``started`` first, so the caller stops it whatever happens here.

    Raises:
        EmbeddedStartError: it never became ready; with the tail of its log.
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        address = f"127.0.0.1:{free_loopback_port()}"
        process = make(address)
        started.append(process)
        process.start()
        if wait_until_ready(process, functools.partial(ready, address), deadline_seconds):
            return address
        problem = _not_ready(process, deadline_seconds)  # before stop() changes its status
        crashed = process.exited() is not None
        process.stop()
        if not crashed or attempt == START_ATTEMPTS:
            raise problem
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class EmbeddedLayout:
    """What the embedded agent may touch."""

    allow_input: Sequence[Path]
    allow_output: Sequence[Path]
    node_name: str = NODE_NAME


def _controlplane(workdir: Path) -> Callable[[str], ChildProcess]:
    def make(address: str) -> ChildProcess:
        argv = [
            *program("h2k-controlplane", "controlplane.main"),
            "--listen",
            address,
            "--db",
            f"sqlite:///{workdir / 'h2k.db'}",
            "--insecure",
            "--heartbeat-interval",
            "1",
            "--lease-seconds",
            "5",
        ]
        return ChildProcess("control plane", argv, workdir / "controlplane.log")

    return make


def _agent(
    workdir: Path, controlplane: str, layout: EmbeddedLayout
) -> Callable[[str], ChildProcess]:
    def make(address: str) -> ChildProcess:
        argv = [
            *program("h2k-agent", "agent.main"),
            "--control-plane",
            controlplane,
            "--listen",
            address,
            "--node-name",
            layout.node_name,
            "--state-dir",
            str(workdir / "agent"),
            "--insecure",
            "--shutdown-grace-seconds",
            str(AGENT_SHUTDOWN_GRACE_SECONDS),
        ]
        for directory in layout.allow_input:
            argv += ["--allow-input", str(directory)]
        for directory in layout.allow_output:
            argv += ["--allow-output", str(directory)]
        return ChildProcess("agent", argv, workdir / "agent.log")

    return make


@contextlib.contextmanager
def embedded_cluster(layout: EmbeddedLayout) -> Iterator[str]:
    """Run a private control plane and one agent; yield the control plane's address.

    Both are stopped (agent first) and the temporary directory removed on every way out.

    Raises:
        EmbeddedStartError: one of them did not become ready (with the tail of its log).
    """
    workdir = Path(tempfile.mkdtemp(prefix="hyper2kvm-"))
    started: list[ChildProcess] = []
    try:
        address = start_on_free_port(
            _controlplane(workdir), is_serving, CONTROLPLANE_READY_SECONDS, started
        )
        start_on_free_port(
            _agent(workdir, address, layout),
            lambda agent: is_serving(agent) and agent_is_ready(address, layout.node_name),
            AGENT_READY_SECONDS,
            started,
        )
        yield address
    finally:
        # The agent first: it may still be telling the control plane how its jobs ended.
        for process in reversed(started):
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
