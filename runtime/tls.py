"""TLS for every h2k program: certificate files, reloading them, credentials, peer identity.

Each program takes ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` (or ``H2K_TLS_CERT``,
``H2K_TLS_KEY``, ``H2K_TLS_CA``). The files are read again when they change (cert-manager
rotates them in place): servers use grpc's dynamic SSL server credentials, whose fetcher runs
on every new connection; long-lived client channels are reopened with the new material.
Plaintext needs an explicit ``--insecure``.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

ENV_CERT = "H2K_TLS_CERT"
ENV_KEY = "H2K_TLS_KEY"
ENV_CA = "H2K_TLS_CA"
# Largest request a server accepts; a job spec is a few KiB (spec.py bounds every field).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
]


class TLSConfigError(Exception):
    """The TLS settings cannot be used; the message says what is missing or wrong."""


@dataclass(frozen=True)
class TLSFiles:
    """Where a program's certificate, key and CA bundle live."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class TLSMaterial:
    """The contents of :class:`TLSFiles` at one moment."""

    cert: bytes
    key: bytes
    ca: bytes


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls-cert/--tls-key/--tls-ca`` (defaults from H2K_TLS_*) and ``--insecure``."""
    group = parser.add_argument_group("TLS (mutual TLS unless --insecure)")
    for flag, env, what in (
        ("--tls-cert", ENV_CERT, "this program's certificate (PEM)"),
        ("--tls-key", ENV_KEY, "its private key (PEM)"),
        ("--tls-ca", ENV_CA, "the CA bundle peers must be signed by (PEM)"),
    ):
        group.add_argument(
            flag,
            type=Path,
            default=os.environ.get(env) or None,
            metavar="FILE",
            help=f"{what}; ${env}",
        )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC without authentication (trusted test networks only)",
    )


def tls_files(cert: Path | str | None, key: Path | str | None, ca: Path | str | None) -> TLSFiles:
    """Check that all three files are named and readable.

    Raises:
        TLSConfigError: naming every missing flag (with its variable) or unreadable file.
    """
    named = {"--tls-cert": (cert, ENV_CERT), "--tls-key": (key, ENV_KEY), "--tls-ca": (ca, ENV_CA)}
    missing = [f"{flag} (or ${env})" for flag, (value, env) in named.items() if not value]
    if missing:
        raise TLSConfigError(
            "no TLS material: missing "
            + ", ".join(missing)
            + "; pass them, or --insecure to run plaintext without authentication"
        )
    files = TLSFiles(Path(str(cert)), Path(str(key)), Path(str(ca)))
    try:
        read_material(files)
    except OSError as exc:
        raise TLSConfigError(f"cannot read TLS material: {exc}") from None
    return files


def tls_files_from_args(args: argparse.Namespace) -> TLSFiles | None:
    """The TLS files of a parsed command line, or None with ``--insecure``.

    Raises:
        TLSConfigError: TLS is required and something is missing.
    """
    if args.insecure:
        return None
    return tls_files(args.tls_cert, args.tls_key, args.tls_ca)


def read_material(files: TLSFiles) -> TLSMaterial:
    """Read the three files (OSError when one cannot be read)."""
    return TLSMaterial(files.cert.read_bytes(), files.key.read_bytes(), files.ca.read_bytes())


def _stamp(files: TLSFiles) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in (files.cert, files.key, files.ca):
        st = os.stat(path)
        stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class ReloadingTLS:
    """The current material of some TLS files, read again whenever one of them changes.

    A file caught half-written (a key that does not match yet) is not detected here; grpc
    then fails that handshake and the next one reads the files again.
    """

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self._stamp = _stamp(files)
        self.material = read_material(files)
        self.generation = 0

    def refresh(self) -> bool:
        """Re-read the files when they changed; True when new material was loaded."""
        try:
            stamp = _stamp(self.files)
            if stamp == self._stamp:
                return False
            material = read_material(self.files)
        except OSError as exc:
            log.warning("tls files unreadable, keeping the loaded ones error=%s", exc)
            return False
        self._stamp, self.material = stamp, material
        self.generation += 1
        log.info("tls material reloaded cert=%s generation=%d", self.files.cert, self.generation)
        return True


def _server_config(material: TLSMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.ca
    )


def server_credentials(
    tls: ReloadingTLS, *, require_client_certificate: bool = True
) -> grpc.ServerCredentials:
    """TLS server credentials that pick up rotated files on each new connection.

    Args:
        tls: the server's files.
        require_client_certificate: mutual TLS (the default). grpc cannot ask for an
            optional client certificate: without this flag it asks for none at all.
    """

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        return _server_config(tls.material) if tls.refresh() else None

    return grpc.dynamic_ssl_server_credentials(
        _server_config(tls.material),
        fetch,  # type: ignore[arg-type]  # grpc documents None as "unchanged"
        require_client_authentication=require_client_certificate,
    )


def channel_credentials(material: TLSMaterial) -> grpc.ChannelCredentials:
    """Client credentials: trust the CA, present our certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
    )


def client_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None, token_file: Path | None = None
) -> grpc.ChannelCredentials:
    """Credentials of a short-lived client (h2kctl): trust ``ca``; present a certificate,
    a bearer token read from ``token_file``, or both.

    Raises:
        TLSConfigError: a file cannot be read, or only one of cert and key is given.
    """
    if (cert is None) != (key is None):
        raise TLSConfigError("--tls-cert and --tls-key go together: give both or neither")
    try:
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca.read_bytes(),
            private_key=key.read_bytes() if key is not None else None,
            certificate_chain=cert.read_bytes() if cert is not None else None,
        )
        if token_file is None:
            return creds
        token = token_file.read_text().strip()
    except OSError as exc:
        raise TLSConfigError(f"cannot read TLS material: {exc}") from None
    if not token:
        raise TLSConfigError(f"--token-file: {token_file} is empty")
    return grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
