"""What every h2kctl command shares: global options, the client, and error reporting."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import typer

from client import H2KClient
from protocol.errors import H2KError
from runtime.tls import TLSConfigError, client_credentials

EXIT_OK = 0
EXIT_FAILED = 1  # a remote error, or a job that ended FAILED / CANCELLED
EXIT_INVALID_INPUT = 2  # bad local input; nothing was sent
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class TLSOptions:
    """--tls-ca, --tls-cert, --tls-key and --token-file (read only when connecting)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials, or an Exit naming what is missing."""
        if self.ca is None or (self.cert is None and self.token_file is None):
            raise fail(
                "error: no TLS material: give --tls-ca ($H2K_TLS_CA) and either --tls-cert and "
                "--tls-key ($H2K_TLS_CERT, $H2K_TLS_KEY) or --token-file ($H2K_TOKEN_FILE); "
                "or --insecure for plaintext",
                EXIT_INVALID_INPUT,
            )
        try:
            return client_credentials(self.ca, self.cert, self.key, self.token_file)
        except TLSConfigError as exc:
            raise fail(f"error: {exc}", EXIT_INVALID_INPUT) from None


@dataclass(frozen=True)
class Settings:
    """The global options given before the command."""

    server: str
    insecure: bool
    timeout: float
    tls: TLSOptions = field(default_factory=TLSOptions)

    def connect(self) -> H2KClient:
        credentials = None if self.insecure else self.tls.credentials()
        return H2KClient(
            self.server, insecure=self.insecure, timeout=self.timeout, credentials=credentials
        )


class _StderrLogHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (rich swaps it while a bar is live)."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"h2kctl: {self.format(record)}", err=True)


def show_client_logs() -> None:
    """Show the client's reconnect notices on stderr (operators want to know why it waits)."""
    logger = logging.getLogger("client")
    if not any(isinstance(h, _StderrLogHandler) for h in logger.handlers):
        logger.addHandler(_StderrLogHandler())
    logger.setLevel(logging.INFO)


def settings_of(ctx: typer.Context) -> Settings:
    settings = ctx.find_object(Settings)
    if settings is None:  # only when a command is invoked without the app's callback
        raise RuntimeError("h2kctl global options were not parsed")
    return settings


def describe_error(exc: H2KError, server: str) -> str:
    """One line for stderr: "error: <CODE>: <message>"."""
    code = exc.code.name
    # from_rpc_error already puts the code in front of the message; do not repeat it.
    message = exc.message.removeprefix(f"{code}: ")
    if exc.code is grpc.StatusCode.UNAVAILABLE:
        message = f"the control plane at {server} cannot be reached ({message})"
    return f"error: {code}: {message}"


def fail(message: str, exit_code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``message`` to stderr and return the Exit to raise."""
    typer.echo(message, err=True)
    return typer.Exit(exit_code)


@contextmanager
def reporting_errors(settings: Settings) -> Iterator[None]:
    """Turn expected errors into one stderr line and an exit code, never a traceback."""
    try:
        yield
    except H2KError as exc:
        raise fail(describe_error(exc, settings.server)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None
