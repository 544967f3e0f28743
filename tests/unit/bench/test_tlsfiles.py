"""The one certificate builder (bench/tlsfiles.py), checked with cryptography's own RFC 5280
path validation: what it issues verifies against its CA, and nothing longer does."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from bench.tlsfiles import CertAuthority, make_tls

LOOPBACK_IP = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _verify(ca: x509.Certificate, leaf: x509.Certificate, *chain: x509.Certificate) -> None:
    verifier = (
        PolicyBuilder()
        .store(Store([ca]))
        .time(dt.datetime.now(dt.UTC))
        .build_server_verifier(LOOPBACK_IP)
    )
    verifier.verify(leaf, list(chain))


def _intermediate(ca: CertAuthority) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA certificate the root signs: what path_length=0 forbids."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate")]))
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # the root's key usage: may sign certificates
        .add_extension(ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value, True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def _leaf(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "collector")]))
        .issuer_name(issuer.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([LOOPBACK_IP]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def test_a_server_certificate_verifies_against_its_ca(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path)
    server = ca.server()
    _verify(_load(ca.path), _load(server.cert))
    assert stat.S_IMODE(server.key.stat().st_mode) == 0o600
    serialization.load_pem_private_key(server.key.read_bytes(), password=None)


def test_the_ca_signs_leaves_only_no_intermediate_ca(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path)
    intermediate, key = _intermediate(ca)
    with pytest.raises(VerificationError):
        _verify(ca.cert, _leaf(intermediate, key), intermediate)
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)


def test_the_benchmarks_pair_is_the_same_builder(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    _verify(_load(tls.ca), _load(tls.cert))
    assert tls.ca_bytes() == tls.ca.read_bytes()
