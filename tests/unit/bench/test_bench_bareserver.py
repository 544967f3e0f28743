"""bench/bareserver.py: the transport baseline serves with the collector's own gRPC options
(collector.grpcserver), so the benchmark compares like with like, and its process still
loads no collector code (its RSS is gRPC's alone)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.bareserver import MAX_MESSAGE_BYTES, server_options
from tripline.collector.config import CollectorConfig
from tripline.collector.grpcserver import grpc_server_options

ROOT = Path(__file__).resolve().parents[3]


def test_the_baseline_has_the_collectors_grpc_options_but_not_its_port_sharing() -> None:
    config = CollectorConfig(max_message_bytes=MAX_MESSAGE_BYTES)
    # What a single collector (no --workers) sets, less the SO_REUSEPORT choice: the
    # baseline binds a port of its own and keeps gRPC's default there.
    collector = dict(grpc_server_options(config))
    assert collector.pop("grpc.so_reuseport") == 0
    baseline = dict(server_options())
    assert baseline == collector
    assert "grpc.so_reuseport" not in baseline
    # the options a copy once lacked: TLS/HTTP2 handshake and idle-connection limits
    assert baseline["grpc.server_handshake_timeout_ms"] == int(config.hello_timeout * 1000)
    assert baseline["grpc.max_connection_idle_ms"] == int(config.connection_idle_timeout * 1000)
    assert dict(server_options(1234))["grpc.max_receive_message_length"] == 1234


def test_the_baseline_process_imports_no_collector_code() -> None:
    code = (
        "import sys, bench.bareserver; "
        "print(sorted(m for m in sys.modules if m.startswith('tripline.collector')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"
