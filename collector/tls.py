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
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from collector.config import AgentConfig, CollectorConfig, ConfigError

if TYPE_CHECKING:
    # cryptography costs ~15 MB of RSS: the collector imports it where it checks its
    # files; the agent on an office PC checks its own with the standard ssl module.
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

log = logging.getLogger(__name__)

PLAINTEXT_WARNING = (
    "gRPC without TLS (plaintext enabled): credentials and metrics cross the network "
    "unencrypted; use this for local development only"
)

# auth_context() keys that name the peer of a verified client certificate.
_IDENTITY_KEYS = ("x509_common_name", "x509_subject_alternative_name")


class TlsConfigError(ConfigError):
    """A TLS setting is missing or its file is unusable; names the key and the file."""


@dataclass(frozen=True)
class ServerFiles:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None


@dataclass(frozen=True)
class ClientFiles:
    root_ca: bytes | None  # None: the operating system's trust store
    certificate_chain: bytes | None
    private_key: bytes | None


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(key, f"cannot read {path}: {exc.strerror}") from None


def _certificates(path: Path, key: str, now: float) -> tuple[bytes, list[x509.Certificate]]:
    from cryptography import x509

    data = _read(path, key)
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

    data = _read(path, key)
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


def client_files(config: AgentConfig, now: float) -> ClientFiles | None:
    """The agent's checked TLS files; None when plaintext is explicitly enabled."""
    if config.plaintext:
        return None
    root_ca = None
    if config.tls_ca is not None:
        root_ca = _read(config.tls_ca, "tls_ca")
        try:
            ssl.create_default_context(cadata=root_ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            raise TlsConfigError(
                "tls_ca",
                f"{config.tls_ca} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')",
            ) from None
    if (config.tls_cert is None) != (config.tls_key is None):
        missing = "tls_key" if config.tls_key is None else "tls_cert"
        raise TlsConfigError(
            missing, "a client certificate needs both tls_cert and tls_key (or neither)"
        )
    chain = private_key = None
    if config.tls_cert is not None and config.tls_key is not None:
        chain = _read(config.tls_cert, "tls_cert")
        private_key = _read(config.tls_key, "tls_key")
        _check_pair(config.tls_cert, config.tls_key)
    return ClientFiles(root_ca, chain, private_key)


def _refuse_password() -> bytes:
    raise TlsConfigError("tls_key", "the key is encrypted; gRPC needs an unencrypted key")


def _check_pair(cert: Path, key: Path) -> None:
    """The agent's client certificate and key, checked with the standard ssl module."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key, password=_refuse_password)
    except TlsConfigError:
        raise
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TlsConfigError(
                "tls_key", f"{key} is not the private key of the tls_cert certificate"
            ) from None
        raise TlsConfigError(
            "tls_cert", f"{cert} and {key} are not a PEM certificate and its key ({exc.reason})"
        ) from None


def channel_credentials(files: ClientFiles) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=files.root_ca,
        private_key=files.private_key,
        certificate_chain=files.certificate_chain,
    )


def agent_channel_credentials(config: AgentConfig, now: float) -> grpc.ChannelCredentials | None:
    """The agent's channel credentials; None (plaintext, with a warning logged) only when
    the config explicitly enables plaintext."""
    files = client_files(config, now)
    if files is None:
        log.warning(PLAINTEXT_WARNING, extra={"collector": config.collector})
        return None
    return channel_credentials(files)


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
