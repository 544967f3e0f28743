"""TLS from the agent to the collector: check the configured files, build credentials.

Checked with the standard ``ssl`` module before the agent dials, so a wrong path or a key
that belongs to another certificate stops the agent at start with the config key and the
reason, not with a handshake failure later. (The collector checks its own files with
``cryptography``, which an office PC does not install.)
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from tripline.agent.config import AgentConfig
from tripline.common.tls import PLAINTEXT_WARNING, TlsConfigError, read_pem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientFiles:
    root_ca: bytes | None  # None: the operating system's trust store
    certificate_chain: bytes | None
    private_key: bytes | None


def client_files(config: AgentConfig, now: float) -> ClientFiles | None:
    """The agent's checked TLS files; None when plaintext is explicitly enabled."""
    if config.plaintext:
        return None
    root_ca = None
    if config.tls_ca is not None:
        root_ca = read_pem(config.tls_ca, "tls_ca")
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
        chain = read_pem(config.tls_cert, "tls_cert")
        private_key = read_pem(config.tls_key, "tls_key")
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
