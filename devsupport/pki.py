"""A throw-away certificate authority for tests: a CA and leaf certificates as PEM files.

Built with the ``cryptography`` package (EC P-256 keys, short validity). Leaves are good for
both TLS server and client authentication, like the certificates cert-manager issues for h2k.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate and its key, as files."""

    name: str
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "h2k tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class CertificateAuthority:
    """A self-signed CA whose files live in ``directory``."""

    def __init__(self, directory: Path, name: str = "h2k-test-ca") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert = directory / f"{name}.crt"
        self.cert.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = ("127.0.0.1",),
        stem: str = "",
    ) -> Leaf:
        """Issue a leaf for ``name`` (the common name) with DNS and IP SANs.

        ``name`` itself is always a DNS SAN, so it is the identity h2k sees.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (name, *dns)]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = stem or name
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return Leaf(name=name, cert=cert_path, key=key_path)


def tls_args(leaf: Leaf, ca: Path) -> list[str]:
    """``--tls-cert/--tls-key/--tls-ca`` for a program presenting ``leaf``."""
    return ["--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key), "--tls-ca", str(ca)]


@dataclass
class ClusterPKI:
    """Certificates and a roles file for a TLS test cluster.

    The control plane is ``h2k-controlplane``; agents are ``node-*`` (role agent); the
    default client is ``admin`` (role admin). :meth:`client` issues more identities.
    """

    ca: CertificateAuthority
    controlplane: Leaf
    admin: Leaf
    roles_file: Path
    leaves: dict[str, Leaf]

    @classmethod
    def create(cls, directory: Path, roles: dict[str, list[str]] | None = None) -> ClusterPKI:
        ca = CertificateAuthority(directory)
        book = {"admin": ["admin"], "node-*": ["agent"], **(roles or {})}
        roles_file = directory / "roles.yaml"
        roles_file.write_text(json.dumps({"identities": book}))  # JSON is YAML
        return cls(
            ca=ca,
            controlplane=ca.issue("h2k-controlplane", dns=("localhost",)),
            admin=ca.issue("admin"),
            roles_file=roles_file,
            leaves={},
        )

    def client(self, name: str) -> Leaf:
        """A leaf for ``name`` (issued once)."""
        if name not in self.leaves:
            self.leaves[name] = self.ca.issue(name)
        return self.leaves[name]

    def args(self, leaf: Leaf) -> list[str]:
        return tls_args(leaf, self.ca.cert)

    def credentials(self, leaf: Leaf | None = None) -> grpc.ChannelCredentials:
        leaf = leaf or self.admin
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert.read_bytes(),
            private_key=leaf.key.read_bytes(),
            certificate_chain=leaf.cert.read_bytes(),
        )
