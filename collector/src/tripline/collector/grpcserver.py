"""The gRPC server's options and the connections the descriptor limit leaves it.

Kept apart from the wiring (collector.app) and free of heavy imports, so the benchmark's
transport baseline (bench/bareserver.py) builds its server with these same options
without loading the collector.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tripline.collector.config import CollectorConfig

log = logging.getLogger(__name__)

# Descriptors kept for everything but client connections: the store (SQLite WAL holds
# three, a PostgreSQL pool a few), log files, the rule file on reload, gRPC's own pipes.
RESERVED_FILES = 64


def grpc_server_options(
    config: CollectorConfig, max_connections: int | None = None, share_port: bool | None = False
) -> list[tuple[str, int]]:
    """``share_port``: True sets SO_REUSEPORT (``--workers``), False clears it, None leaves
    the option out (gRPC's default; the benchmark's baseline, which binds its own port)."""
    # Agents ping every 30 s; allow pings down to 10 s apart without calls so a
    # client's keepalive never earns a GOAWAY "too_many_pings".
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 5),
        # A TCP connection that has not finished TLS and the HTTP/2 preface within the
        # Hello timeout is closed (gRPC's default is 120 s): an idle socket costs little.
        ("grpc.server_handshake_timeout_ms", int(config.hello_timeout * 1000)),
        # A connection with no call open (handshaken, but no stream) is sent GOAWAY and
        # closed; an agent keeps its Connect stream open, so this never touches one.
        ("grpc.max_connection_idle_ms", int(config.connection_idle_timeout * 1000)),
    ]
    # grpc-core sets SO_REUSEPORT on Linux by default: a second collector started by
    # mistake on the same port would bind it too and silently take half the agents.
    # Only --workers shares the port, on purpose (collector.workers).
    if share_port is not None:
        options.append(("grpc.so_reuseport", 1 if share_port else 0))
    if max_connections is not None:
        # Past it gRPC closes new connections at accept, before any handshake, so gRPC
        # clients can never take the descriptors the HTTP port and the store need.
        options.append(("grpc.max_allowed_incoming_connections", max_connections))
    return options


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (one connection is one descriptor,
    and a fleet is thousands); return (soft, hard) as they are now. Without the
    ``resource`` module (Windows) or permission, the limit stays and is returned."""
    try:
        import resource
    except ImportError:  # Windows: no per-process descriptor limit of this kind
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit", extra={"error": str(exc)})
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def connection_budget(open_files: int, http_max_connections: int) -> int | None:
    """gRPC connections the descriptor limit leaves after the HTTP port and the rest;
    None when the limit is unknown (no limit to protect)."""
    if open_files < 0:
        return None
    return max(16, open_files - http_max_connections - RESERVED_FILES)


def bind_address(host: str, port: int) -> str:
    """host:port as gRPC binds it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
