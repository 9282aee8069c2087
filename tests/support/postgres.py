"""A real PostgreSQL server for tests: Debian's binaries, a temporary cluster, a loopback port.

``initdb`` and ``postgres`` refuse to run as root, and the tests run as root in CI: the
server then runs as the unprivileged ``nobody`` (through ``runuser``) in a directory made
for it outside pytest's root-only temporary tree. Each test gets its own database.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from devsupport.cluster import free_port, wait_for

UNPRIVILEGED_USER = "nobody"


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed (no initdb): run `make setup`")
    return Path(initdb).parent


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", UNPRIVILEGED_USER, "--", *argv]


@dataclass
class PostgresServer:
    """One ``postgres`` process on 127.0.0.1:``port`` with trust authentication."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="h2k-pg-")))
    port: int = field(default_factory=free_port)
    bin_dir: Path = field(default_factory=postgres_bin_dir)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster (once)."""
        if os.geteuid() == 0:
            pw = subprocess.run(
                ["id", "-u", UNPRIVILEGED_USER], capture_output=True, text=True, check=True
            )
            uid = int(pw.stdout)
            os.chown(self.root, uid, -1)
        os.chmod(self.root, 0o700)
        subprocess.run(
            _as_server_user(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=on -c max_connections=200 -c shared_buffers=32MB"
        )
        subprocess.run(
            _as_server_user(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            cwd=self.root,
        )
        wait_for(self.accepts, timeout=30, what="postgres accepting connections")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, ``immediate``: like a crash)."""
        subprocess.run(
            _as_server_user(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
            ),
            check=False,
            capture_output=True,
            cwd=self.root,
        )

    def accepts(self) -> bool:
        """Whether the server answers a query now."""
        try:
            with psycopg.connect(self.url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def create_database(self, prefix: str = "h2k") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def started_server() -> PostgresServer:
    """A new running server (call :meth:`PostgresServer.destroy` when done)."""
    server = PostgresServer()
    try:
        server.init()
        server.start()
    except BaseException:
        shutil.rmtree(server.root, ignore_errors=True)
        raise
    return server
