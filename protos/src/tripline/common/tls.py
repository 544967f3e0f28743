"""TLS pieces agent and collector share: the error type, reading a PEM file, the warning."""

from __future__ import annotations

from pathlib import Path

from tripline.common.config import ConfigError

PLAINTEXT_WARNING = (
    "gRPC without TLS (plaintext enabled): credentials and metrics cross the network "
    "unencrypted; use this for local development only"
)


class TlsConfigError(ConfigError):
    """A TLS setting is missing or its file is unusable; names the key and the file."""


def read_pem(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(key, f"cannot read {path}: {exc.strerror}") from None
