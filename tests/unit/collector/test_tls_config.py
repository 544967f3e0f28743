"""TLS settings: each unusable certificate setup fails at start with the key and reason."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench.tlsfiles import CertAuthority
from tripline.agent import cli as agent_cli
from tripline.agent import tls as agent_tls
from tripline.agent.config import AgentConfig, load_agent_config
from tripline.collector import tls
from tripline.collector.cli import build_parser
from tripline.collector.config import CollectorConfig, ConfigError, load_collector_config

NOW = time.time()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("pki"))


def collector(**values: object) -> CollectorConfig:
    return CollectorConfig(**values)  # type: ignore[arg-type]


def test_plaintext_needs_no_files() -> None:
    assert tls.server_files(collector(plaintext=True), NOW) is None
    assert agent_tls.client_files(AgentConfig(plaintext=True), NOW) is None


def test_collector_without_certificate_refuses_and_says_how_to_fix() -> None:
    with pytest.raises(tls.TlsConfigError) as caught:
        tls.server_files(collector(), NOW)
    assert caught.value.key == "tls_cert"
    assert str(caught.value) == (
        "config key 'tls_cert': the gRPC port needs a TLS certificate and key "
        "(--tls-cert FILE --tls-key FILE); for local development only, pass --plaintext "
        "to run without TLS"
    )
    assert isinstance(caught.value, ConfigError)  # the CLI prints it and exits 2


def test_collector_with_certificate_but_no_key(ca: CertAuthority) -> None:
    server = ca.server()
    with pytest.raises(tls.TlsConfigError) as caught:
        tls.server_files(collector(tls_cert=server.cert), NOW)
    assert caught.value.key == "tls_key"


def test_server_files_read_and_checked(ca: CertAuthority) -> None:
    server = ca.server()
    files = tls.server_files(
        collector(tls_cert=server.cert, tls_key=server.key, tls_client_ca=ca.path), NOW
    )
    assert files is not None
    assert files.certificate_chain == server.cert.read_bytes()
    assert files.private_key == server.key.read_bytes()
    assert files.client_ca == ca.path.read_bytes()
    assert tls.server_credentials(files) is not None


def test_missing_file_names_key_and_path(tmp_path: Path, ca: CertAuthority) -> None:
    server = ca.server()
    missing = tmp_path / "nope.key"
    with pytest.raises(tls.TlsConfigError) as caught:
        tls.server_files(collector(tls_cert=server.cert, tls_key=missing), NOW)
    assert str(caught.value) == (
        f"config key 'tls_key': cannot read {missing}: No such file or directory"
    )


def test_not_a_certificate(tmp_path: Path, ca: CertAuthority) -> None:
    server = ca.server()
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(tls.TlsConfigError) as caught:
        tls.server_files(collector(tls_cert=junk, tls_key=server.key), NOW)
    assert caught.value.key == "tls_cert"
    assert "holds no PEM certificate" in caught.value.reason


def test_a_certificate_where_the_key_belongs(ca: CertAuthority) -> None:
    server = ca.server()
    with pytest.raises(tls.TlsConfigError) as caught:
        tls.server_files(collector(tls_cert=server.cert, tls_key=server.cert), NOW)
    assert caught.value.key == "tls_key"
    assert "holds no PEM private key" in caught.value.reason


def test_key_of_another_certificate(ca: CertAuthority) -> None:
    one, other = ca.server("one"), ca.server("other")
    with pytest.raises(tls.TlsConfigError) as caught:
        tls.server_files(collector(tls_cert=one.cert, tls_key=other.key), NOW)
    assert caught.value.reason == f"{other.key} is not the private key of the tls_cert certificate"


def test_encrypted_key(tmp_path: Path, ca: CertAuthority) -> None:
    server = ca.server("encrypted")
    key = serialization.load_pem_private_key(server.key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(tls.TlsConfigError) as caught:
        tls.server_files(collector(tls_cert=server.cert, tls_key=locked), NOW)
    assert "is encrypted" in caught.value.reason


def test_expired_and_not_yet_valid_certificates(ca: CertAuthority) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    expired = ca.issue("old", server=True, valid_from=past, valid_until=past + dt.timedelta(days=1))
    with pytest.raises(tls.TlsConfigError) as caught:
        tls.server_files(collector(tls_cert=expired.cert, tls_key=expired.key), NOW)
    until = (past + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    assert caught.value.reason == f"{expired.cert}: certificate CN=old expired on {until}"

    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    early = ca.issue("early", server=True, valid_from=future)
    with pytest.raises(tls.TlsConfigError) as caught:
        tls.server_files(collector(tls_cert=early.cert, tls_key=early.key), NOW)
    assert "is not valid before" in caught.value.reason
    assert "check this machine's clock" in caught.value.reason


def test_agent_files(ca: CertAuthority) -> None:
    client = ca.issue("agt_0123456789abcdef")
    files = agent_tls.client_files(
        AgentConfig(tls_ca=ca.path, tls_cert=client.cert, tls_key=client.key), NOW
    )
    assert files == agent_tls.ClientFiles(
        ca.path.read_bytes(), client.cert.read_bytes(), client.key.read_bytes()
    )
    # No CA configured: the operating system's trust store decides.
    assert agent_tls.client_files(AgentConfig(), NOW) == agent_tls.ClientFiles(None, None, None)


def test_agent_client_certificate_needs_its_key(ca: CertAuthority) -> None:
    client = ca.issue("agt_half")
    with pytest.raises(tls.TlsConfigError) as caught:
        agent_tls.client_files(AgentConfig(tls_ca=ca.path, tls_cert=client.cert), NOW)
    assert caught.value.key == "tls_key"
    with pytest.raises(tls.TlsConfigError) as caught:
        agent_tls.client_files(AgentConfig(tls_ca=ca.path, tls_key=client.key), NOW)
    assert caught.value.key == "tls_cert"


def test_peer_identities_from_auth_context() -> None:
    assert tls.peer_identities({}) == frozenset()
    context = {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"agt_aaaa"],
        "x509_subject_alternative_name": [b"agt_aaaa", b"pc-01.example"],
    }
    assert tls.peer_identities(context) == {"agt_aaaa", "pc-01.example"}


def test_self_signed_demo_certificate(tmp_path: Path) -> None:
    cert, key = tls.ensure_self_signed(tmp_path, ("localhost", "127.0.0.1", "::1"), NOW)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(v) for v in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    files = tls.server_files(collector(tls_cert=cert, tls_key=key), NOW)
    assert files is not None

    # Valid: kept. Expiring within a day: replaced by a new pair.
    first = cert.read_bytes()
    assert tls.ensure_self_signed(tmp_path, ("localhost",), NOW + 86400) == (cert, key)
    assert cert.read_bytes() == first
    tls.ensure_self_signed(tmp_path, ("localhost",), NOW + 365 * 86400)
    assert cert.read_bytes() != first


def test_tls_keys_from_file_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "collector:\n  tls_cert: /etc/tripline/tls.crt\n  tls_key: /etc/tripline/tls.key\n"
        "agent:\n  tls_ca: /etc/tripline/ca.crt\n  plaintext: false\n"
    )
    config = load_collector_config(
        path, environ={"TRIPLINE_COLLECTOR_TLS_CLIENT_CA": "/etc/tripline/agents-ca.crt"}
    )
    assert config.tls_cert == Path("/etc/tripline/tls.crt")
    assert config.tls_key == Path("/etc/tripline/tls.key")
    assert config.tls_client_ca == Path("/etc/tripline/agents-ca.crt")
    assert config.plaintext is False
    agent = load_agent_config(path, environ={}, flags={"plaintext": True})
    assert (agent.tls_ca, agent.plaintext) == (Path("/etc/tripline/ca.crt"), True)
    with pytest.raises(ConfigError) as caught:
        load_collector_config(None, environ={"TRIPLINE_COLLECTOR_PLAINTEXT": "maybe"})
    assert caught.value.key == "plaintext"


def test_cli_flags() -> None:
    args = build_parser().parse_args(
        ["collector", "--tls-cert", "s.crt", "--tls-key", "s.key", "--tls-client-ca", "ca.crt"]
    )
    assert (args.tls_cert, args.tls_key, args.tls_client_ca) == (
        Path("s.crt"),
        Path("s.key"),
        Path("ca.crt"),
    )
    # Unset, --plaintext must stay None so a config file's `plaintext: true` survives.
    assert args.plaintext is None
    agent = agent_cli.build_parser().parse_args(["--tls-ca", "ca.crt", "--plaintext"])
    assert (agent.tls_ca, agent.plaintext) == (Path("ca.crt"), True)


def test_agent_checks_its_files_without_cryptography(ca: CertAuthority, tmp_path: Path) -> None:
    """The agent validates with the ssl module: a mismatched or non-PEM file is named."""
    client, other = ca.issue("agt_a"), ca.issue("agt_b")
    with pytest.raises(tls.TlsConfigError) as caught:
        agent_tls.client_files(
            AgentConfig(tls_ca=ca.path, tls_cert=client.cert, tls_key=other.key), NOW
        )
    assert caught.value.reason == f"{other.key} is not the private key of the tls_cert certificate"
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(tls.TlsConfigError) as caught:
        agent_tls.client_files(AgentConfig(tls_ca=junk), NOW)
    assert caught.value.key == "tls_ca" and str(junk) in caught.value.reason
    code = (
        "import sys, tripline.collector.cli, tripline.agent.runner; "
        "sys.exit('cryptography' in sys.modules or 'sqlalchemy' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
