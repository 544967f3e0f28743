"""TLS for the gRPC port: read and check certificate files, build gRPC credentials.

Every check runs before the collector binds its port or the agent dials, so a wrong
path, a key that belongs to another certificate or an expired certificate stops the
program at start with the config key and the reason, not with a handshake failure on
every office PC later. With ``tls_client_ca`` set the collector requires a client
certificate from that CA (mutual TLS); the servicer then binds its identity to the agent.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from tripline.collector.config import CollectorConfig
from tripline.common.tls import TlsConfigError, read_pem

if TYPE_CHECKING:
    # cryptography costs ~15 MB of RSS: the collector imports it where it checks its
    # files; the agent on an office PC checks its own with the standard ssl module.
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

log = logging.getLogger(__name__)

# auth_context() keys that name the peer of a verified client certificate.
_IDENTITY_KEYS = ("x509_common_name", "x509_subject_alternative_name")


@dataclass(frozen=True)
class ServerFiles:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None


def _certificates(path: Path, key: str, now: float) -> tuple[bytes, list[x509.Certificate]]:
    from cryptography import x509

    data = read_pem(path, key)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsConfigError(
            key, f"{path} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')"
        ) from None
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    for cert in certs:
        subject = cert.subject.rfc4514_string() or "(empty subject)"
        if cert.not_valid_after_utc <= moment:
            raise TlsConfigError(
                key, f"{path}: certificate {subject} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
            )
        if cert.not_valid_before_utc > moment:
            raise TlsConfigError(
                key,
                f"{path}: certificate {subject} is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check this machine's clock)",
            )
    return data, certs


def _private_key_for(path: Path, key: str, cert: x509.Certificate, cert_key: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data = read_pem(path, key)
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsConfigError(
            key, f"{path} is encrypted; gRPC needs an unencrypted key (openssl pkey -in ...)"
        ) from None
    except ValueError:
        raise TlsConfigError(
            key, f"{path} holds no PEM private key ('-----BEGIN PRIVATE KEY-----')"
        ) from None
    if _public(private.public_key()) != _public(cert.public_key()):
        raise TlsConfigError(key, f"{path} is not the private key of the {cert_key} certificate")
    return data


def _public(public_key: PublicKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def server_files(config: CollectorConfig, now: float) -> ServerFiles | None:
    """The collector's checked TLS files; None when plaintext is explicitly enabled."""
    if config.plaintext:
        return None
    if config.tls_cert is None or config.tls_key is None:
        missing = "tls_cert" if config.tls_cert is None else "tls_key"
        raise TlsConfigError(
            missing,
            "the gRPC port needs a TLS certificate and key (--tls-cert FILE --tls-key FILE); "
            "for local development only, pass --plaintext to run without TLS",
        )
    chain, certs = _certificates(config.tls_cert, "tls_cert", now)
    private_key = _private_key_for(config.tls_key, "tls_key", certs[0], "tls_cert")
    client_ca = None
    if config.tls_client_ca is not None:
        client_ca, _ = _certificates(config.tls_client_ca, "tls_client_ca", now)
    return ServerFiles(chain, private_key, client_ca)


def server_credentials(files: ServerFiles) -> grpc.ServerCredentials:
    # A client CA means mutual TLS: every connection, Enroll included, must present a
    # certificate from that CA; gRPC refuses the handshake otherwise.
    return grpc.ssl_server_credentials(
        [(files.private_key, files.certificate_chain)],
        root_certificates=files.client_ca,
        require_client_auth=files.client_ca is not None,
    )


def peer_identities(auth_context: Mapping[str, Iterable[bytes]]) -> frozenset[str]:
    """The common name and subject alternative names of a verified client certificate
    (empty without mutual TLS), as gRPC's ``context.auth_context()`` reports them."""
    names: set[str] = set()
    for key in _IDENTITY_KEYS:
        for value in auth_context.get(key, ()):
            names.add(value.decode("utf-8", errors="replace"))
    return frozenset(names)


def ensure_self_signed(
    directory: Path, hosts: Iterable[str], now: float, days: int = 365
) -> tuple[Path, Path]:
    """A self-signed server certificate for ``hosts`` in ``directory`` (made once, made
    again when unusable or expired); returns (certificate, key). For the demo: the
    certificate is its own CA, so the agent trusts exactly this file."""
    cert_path = directory / "demo-tls.crt"
    key_path = directory / "demo-tls.key"
    if cert_path.exists() and key_path.exists():
        try:
            _, certs = _certificates(cert_path, "tls_cert", now + 86400)
            _private_key_for(key_path, "tls_key", certs[0], "tls_cert")
            return cert_path, key_path
        except TlsConfigError:
            pass  # expired, foreign or damaged: make a new pair
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tripline demo collector")])
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    start = dt.datetime.fromtimestamp(now, dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
