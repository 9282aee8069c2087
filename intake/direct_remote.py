"""hyper2kvm direct mode: the control plane it talks to (named by H2K_SERVER, or embedded),
submitting and following the migration (see :mod:`intake.direct`)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from client import H2KClient
from intake.direct_parts import (
    CANCEL_WAIT_SECONDS,
    EXIT_FAILED,
    EXIT_INVALID_INPUT,
    POLL_SECONDS,
    PROG,
    TERMINAL,
    UNAVAILABLE_GRACE_SECONDS,
    DirectFailure,
    env_flag,
    needs_root,
    note,
    progress_line,
)
from intake.embedded import EmbeddedLayout, EmbeddedStartError, embedded_cluster
from protocol.errors import AlreadyExists, H2KError, InvalidArgument, Unavailable
from protocol.gen.h2k.v1 import migration_pb2
from runtime.tls import TLSConfigError, client_credentials

# --- talking to a control plane --------------------------------------------------------------


@dataclass(frozen=True)
class RemoteSettings:
    """The control plane of ``H2K_SERVER`` and how to reach it."""

    server: str
    insecure: bool
    timeout: float
    ca: str = ""
    cert: str = ""
    key: str = ""
    token_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RemoteSettings | None:
        """None without ``H2K_SERVER``."""
        server = env.get("H2K_SERVER", "").strip()
        if not server:
            return None
        try:
            timeout = float(env.get("H2K_TIMEOUT") or 30.0)
        except ValueError:
            raise DirectFailure(
                "H2K_TIMEOUT: must be a number of seconds", EXIT_INVALID_INPUT
            ) from None
        return cls(
            server=server,
            insecure=env_flag(env.get("H2K_INSECURE")),
            timeout=timeout,
            ca=env.get("H2K_TLS_CA", ""),
            cert=env.get("H2K_TLS_CERT", ""),
            key=env.get("H2K_TLS_KEY", ""),
            token_file=env.get("H2K_TOKEN_FILE", ""),
        )

    def connect(self) -> H2KClient:
        if self.insecure:
            return H2KClient(self.server, insecure=True, timeout=self.timeout)
        if not self.ca or not (self.cert or self.token_file):
            raise DirectFailure(
                "no TLS material for H2K_SERVER: set H2K_TLS_CA and either H2K_TLS_CERT and "
                "H2K_TLS_KEY or H2K_TOKEN_FILE; or H2K_INSECURE=1 for plaintext",
                EXIT_INVALID_INPUT,
            )
        try:
            credentials = client_credentials(
                Path(self.ca),
                Path(self.cert) if self.cert else None,
                Path(self.key) if self.key else None,
                Path(self.token_file) if self.token_file else None,
            )
        except TLSConfigError as exc:
            raise DirectFailure(str(exc), EXIT_INVALID_INPUT) from None
        return H2KClient(self.server, timeout=self.timeout, credentials=credentials)


def embedded_layout(spec: migration_pb2.MigrationSpec) -> EmbeddedLayout:
    """The local agent reads the disks' directories and writes the output directory (paths
    resolved, as the agent compares resolved paths)."""
    inputs = sorted({os.path.dirname(os.path.realpath(d.path)) for d in spec.vm.disks})
    return EmbeddedLayout(
        allow_input=[Path(p) for p in inputs],
        allow_output=[Path(os.path.realpath(spec.output_directory))],
    )


@contextmanager
def control_plane(
    spec: migration_pb2.MigrationSpec, remote: RemoteSettings | None
) -> Iterator[H2KClient]:
    """A client of ``remote``, or of an embedded control plane started for ``spec``."""
    if remote is not None:
        with remote.connect() as client:
            yield client
        return
    if needs_root(spec) and os.geteuid() != 0:
        raise DirectFailure(
            "the manifest's pipeline.fix repairs the guest, which needs root (attach, mount, "
            "chroot): run hyper2kvm as root, or disable pipeline.fix to convert only"
        )
    try:
        os.makedirs(spec.output_directory, exist_ok=True)
    except OSError as exc:
        raise DirectFailure(
            f"output directory {spec.output_directory}: cannot create: {exc.strerror}"
        ) from None
    note("starting an embedded control plane and agent (H2K_SERVER is not set)")
    try:
        with embedded_cluster(embedded_layout(spec)) as address, H2KClient(address) as client:
            yield client
    except EmbeddedStartError as exc:
        raise DirectFailure(str(exc)) from None


def submit(client: H2KClient, spec: migration_pb2.MigrationSpec) -> migration_pb2.Migration:
    """Submit, or attach to the migration this manifest already started."""
    try:
        answer = client.submit_migrations([spec])[0]
    except InvalidArgument as exc:
        raise DirectFailure(f"invalid migration: {exc.message}", EXIT_INVALID_INPUT) from None
    except AlreadyExists as exc:
        raise DirectFailure(f"{exc.message}", EXIT_FAILED) from None
    if answer.created:
        note(f"migration {spec.migration_id} submitted")
    else:
        note(f"attached to migration {spec.migration_id}, submitted before with this manifest")
    return answer.migration


def follow(client: H2KClient, migration_id: str, verbose: bool) -> migration_pb2.Migration:
    """Poll the migration until it ends, printing progress lines on stderr on each change."""
    last = ""
    unreachable_since: float | None = None
    while True:
        try:
            m = client.get_migration(migration_id)
            unreachable_since = None
        except Unavailable as exc:
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since > UNAVAILABLE_GRACE_SECONDS:
                raise DirectFailure(f"the control plane cannot be reached: {exc.message}") from None
            time.sleep(POLL_SECONDS)  # polling a remote state, not synchronising
            continue
        lines = [progress_line(m)]
        if verbose:
            lines += [
                f"{PROG}:   {j.disk_id or '-'} {j.role} {j.progress_percent:.0f}%" for j in m.jobs
            ]
        text = "\n".join(lines)
        if text != last:
            print(text, file=sys.stderr, flush=True)
            last = text
        if m.state in TERMINAL:
            return m
        time.sleep(POLL_SECONDS)  # polling a remote state, not synchronising


def cancel_and_wait(client: H2KClient, migration_id: str) -> None:
    """Cancel the migration and give its cleanup a bounded time (embedded mode's Ctrl-C)."""
    try:
        client.cancel_migration(migration_id, f"{PROG} interrupted")
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            if client.get_migration(migration_id).state in TERMINAL:
                return
            time.sleep(POLL_SECONDS)  # polling a remote state, not synchronising
    except H2KError as exc:
        note(f"cancelling migration {migration_id} failed: {exc.message}")
