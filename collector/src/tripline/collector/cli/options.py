"""Flags several command groups share, so each is spelled and explained once."""

from __future__ import annotations

import argparse
from pathlib import Path


def config_flag(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--config", type=Path, help="YAML config file (flags win over it)")


def store_flags(sp: argparse.ArgumentParser) -> None:
    """Where a store-backed command finds the database (see localstore.open_store)."""
    config_flag(sp)
    sp.add_argument("--data-dir", type=Path, help="collector data directory")
    sp.add_argument("--database-url", help="store URL instead of the data dir's SQLite")


def server_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--listen", help="gRPC HOST:PORT (default 127.0.0.1:7700)")
    sp.add_argument("--http-listen", help="HTTP HOST:PORT for /metrics (default 127.0.0.1:7701)")
    sp.add_argument("--interval", help="agents' collection interval (default 10s)")
    sp.add_argument("--log-format", choices=["json", "text"])


def is_name(text: str) -> bool:
    """Non-empty and without surrounding spaces, as the store requires of names and tokens."""
    return bool(text) and text == text.strip()
