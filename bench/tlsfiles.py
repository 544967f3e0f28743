"""Throwaway certificates: a CA and the server and client certificates it signs, written as
PEM files the way an operator hands them to Tripline.

The one builder for benchmarks and tests (tests import it from here; bench/ never
imports tests/). The benchmark measures the fleet's real shape: every simulated PC
verifies the collector's certificate against a CA it trusts, as an agent with ``tls_ca``
does; `make_tls` makes that pair in the run's temporary directory.

P-256 keys, as the demo's certificate uses: the handshake cost the benchmark measures is
the one a collector with such a certificate pays.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    cert: Path  # PEM certificate
    key: Path  # its unencrypted PKCS#8 private key, mode 0600


@dataclass(frozen=True)
class BenchTls:
    ca: Path  # PEM certificate the generators trust (root_certificates)
    cert: Path  # the server's certificate, signed by ca (--tls-cert)
    key: Path  # its unencrypted private key (--tls-key)

    def ca_bytes(self) -> bytes:
        return self.ca.read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


class CertAuthority:
    """A self-signed CA in `directory` (its certificate at `path`) that signs leaf
    certificates directly.

    path_length=0: only end-entity certificates may follow this CA in a chain (RFC 5280
    4.2.1.9). It signs no intermediate CA, so a leaf key that leaks cannot be turned into
    one, and a verifier refuses any CA certificate it might have signed by mistake.
    """

    def __init__(
        self,
        directory: Path,
        name: str = "Tripline Test CA",
        *,
        valid_for: dt.timedelta = dt.timedelta(days=30),
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + valid_for)
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        slug = name.lower().replace(" ", "-")
        self.path = directory / f"{slug}.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        common_name: str,
        *,
        sans: tuple[str, ...] = (),
        server: bool = False,
        valid_from: dt.datetime | None = None,
        valid_until: dt.datetime | None = None,
    ) -> Issued:
        """A leaf certificate: a server certificate for `sans`, else a client certificate;
        valid from an hour ago for seven days unless told otherwise."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from or now - dt.timedelta(hours=1))
            .not_valid_after(valid_until or now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(s) for s in sans]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        stem = self.directory / common_name.replace("/", "_").replace(" ", "-")
        issued = Issued(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(issued.key, key)
        return issued

    def server(self, name: str = "collector", sans: tuple[str, ...] = LOOPBACK) -> Issued:
        """A server certificate for loopback (or `sans`)."""
        return self.issue(name, sans=sans, server=True)


def make_tls(directory: Path, names: tuple[str, ...] = LOOPBACK) -> BenchTls:
    """A CA and a server certificate for ``names`` (valid one day), written to ``directory``."""
    ca = CertAuthority(directory, "Tripline bench CA", valid_for=dt.timedelta(days=1))
    server = ca.issue(
        "tripline bench collector",
        sans=names,
        server=True,
        valid_until=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
    )
    return BenchTls(ca.path, server.cert, server.key)
