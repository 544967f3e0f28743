"""The benchmark scripts still run: each for a few seconds, as a subprocess, on loopback.

Not a measurement: the figures are checked for shape and for the bare facts a few seconds
of a working system must show (reports applied and acknowledged, a ticket opened).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.agent_overhead import NODE_EXPORTER

ROOT = Path(__file__).resolve().parents[2]


def _run(module: str, *args: str, timeout: float) -> tuple[str, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLINE_")}
    result = subprocess.run(
        [sys.executable, "-m", module, *args, "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{module} failed:\n{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    figures = json.loads(next(line for line in lines if line.startswith("json: "))[6:])
    return result.stdout, figures


def _every_report_acked(f: dict[str, Any], prefix: str, out: str) -> None:
    """Every report sent in the window was acknowledged; nothing failed on the way."""
    assert f[f"{prefix}setup_failures"] == 0, out
    assert f[f"{prefix}client_acked"] == f[f"{prefix}client_sent"] > 0, out
    assert f[f"{prefix}client_lost"] == f[f"{prefix}client_stream_errors"] == 0, out
    assert f[f"{prefix}reports_per_second"] > 0, out
    assert 0 < f[f"{prefix}ack_p50_ms"] <= f[f"{prefix}ack_p99_ms"] <= f[f"{prefix}ack_max_ms"], out


def test_loadgen_measures_the_fleet_shape_against_the_bare_baseline() -> None:
    """Default shape: one TLS connection per PC, certificate verified, a bare gRPC baseline
    in the same run, and every collector figure as a ratio to the baseline's."""
    out, f = _run(
        "bench.loadgen",
        "--agents=20",
        "--duration=5",
        "--warmup=1",
        "--interval=1",
        "--alert-for=1",
        timeout=240,
    )
    for prefix in (
        "baseline: bare grpc.aio servicer, 20 agents, 1 per channel (20 connections), TLS",
        "bare setup: 20 agents enrolled",
        "collector setup: 20 agents enrolled",
        "reports/s applied:",
        "ack latency ms: p50=",
        "collector CPU:",
        "baseline (bare gRPC):",
        "collector / baseline: CPU per report",
        "/metrics scrape:",
        "/metrics vs generate_latest",
        "ticket latency s",
        "machine:",
        "server CPU ms per report",
    ):
        assert any(line.startswith(prefix) for line in out.splitlines()), (prefix, out)
    # The real fleet's shape, seen from the server side: one established TCP connection
    # per simulated PC on the collector's port and on the baseline's, over TLS.
    assert f["tls"] is True and f["agents_per_channel"] == 1, out
    assert f["channels"] == f["generator_channels"] == f["bare_generator_channels"] == 20, out
    assert f["collector_connections"] == f["bare_connections"] == 20, out
    _every_report_acked(f, "", out)
    _every_report_acked(f, "bare_", out)
    assert f["samples_per_second"] >= 50 * f["reports_per_second"], out
    for server in ("collector", "bare"):
        assert f[f"{server}_cpu_ms_per_report"] > 0, out
        assert f[f"{server}_rss_mib"] > 20, out
    assert f["generator_cpu_percent"] > 0 and f["bare_generator_cpu_percent"] > 0, out
    assert 0 < f["generator_machine_percent"] <= 100, out
    for name, collector in (
        ("cpu_ms_per_report", "collector_cpu_ms_per_report"),
        ("ack_p50_ms", "ack_p50_ms"),
        ("ack_p99_ms", "ack_p99_ms"),
        ("rss_mib", "collector_rss_mib"),
    ):
        assert f[f"ratio_{name}"] == pytest.approx(f[collector] / f[f"bare_{name}"]), (name, out)
    assert len(f["loadavg_before"]) == len(f["loadavg_after"]) == 3, out
    assert f["scrape_series"] >= 20 * 55, out
    assert f["tickets_expected"] == 1 and f["tickets_seen"] == 1, out


def test_loadgen_still_measures_the_multiplexed_plaintext_shape() -> None:
    """--agents-per-channel and --plaintext stay for comparison runs; --scrape-interval
    scrapes /metrics with gzip accepted during the window; --workers 2 runs the collector
    as two processes (the applied counters are summed over workers)."""
    out, f = _run(
        "bench.loadgen",
        "--agents=20",
        "--agents-per-channel=10",
        "--plaintext",
        "--no-baseline",
        "--no-compare",
        "--duration=3",
        "--warmup=1",
        "--interval=1",
        "--scrape-interval=0.5",
        "--workers=2",
        timeout=180,
    )
    assert f["tls"] is False and f["channels"] == 2 and f["workers"] == 2, out
    assert f["scrapes"] >= 2 and f["scrapes_gzipped"] == f["scrapes"], out
    assert f["scrape_errors"] == [] and f["scrape_wire_bytes"] < f["scrape_page_bytes"], out
    assert any(line.startswith("/metrics every 0.5 s in the window:") for line in out.splitlines())
    assert f["collector_connections"] == 2, out
    _every_report_acked(f, "", out)
    assert "bare_reports_per_second" not in f and "ratio_cpu_ms_per_report" not in f, out


def test_workers_compare_runs_loadgen_per_worker_count_and_prints_the_ratio() -> None:
    out, runs = _run(
        "bench.workers_compare",
        "--counts=1,2",
        "--",
        "--agents=10",
        "--plaintext",
        "--duration=2",
        "--warmup=1",
        "--interval=1",
        timeout=240,
    )
    assert [f["workers"] for f in runs] == [1, 2], out
    for f in runs:
        _every_report_acked(f, "", out)
        assert f["offline_tickets"] == 0 and f["store_went_unhealthy"] == 0, out
    assert "| workers | reports/s applied |" in out and "| 1.00x |" in out, out
    # 10 PCs lose nothing: no run is called saturated, so its ratio is not the target's
    assert "| saturated | ratio |" in out and "| no | 1.00x |" in out, out


def test_agent_overhead_runs_and_prints_its_figures() -> None:
    # the first run builds the agent-only venv (cached by the sources' hash): a few minutes
    out, f = _run("bench.agent_overhead", "--duration=8", "--interval=2", "--warmup=2", timeout=600)
    assert out.splitlines()[1].startswith("agent: agent-only install "), out
    assert f["agent_from"] == "install", out
    assert f["agent_reports"] >= 2, out
    assert 15 < f["agent_rss_end_mib"] <= f["agent_rss_peak_mib"], out
    # PSS divides shared pages among their users, USS counts only the agent's own
    assert 0 < f["agent_uss_end_mib"] <= f["agent_pss_end_mib"] <= f["agent_rss_end_mib"], out
    assert f["agent_rss_anon_end_mib"] > 5 and f["agent_rss_file_end_mib"] > 5, out
    assert len(f["agent_rss_trace_mib"]) >= 2 and min(f["agent_rss_trace_mib"]) > 15, out
    if shutil.which(NODE_EXPORTER) is None:
        assert "node_exporter: skipped" in out, out
        pytest.skip(f"{NODE_EXPORTER} not installed: only the agent half ran")
    assert "ratio agent/node_exporter: CPU" in out, out
    assert f["node_exporter_units"] >= 3 and f["node_exporter_series"] > 100, out
    assert f["node_exporter_rss_end_mib"] > 1, out
    assert f["uss_ratio"] > 0 and f["pss_ratio"] > 0, out


def test_soak_runs_and_finds_nothing_lost_or_doubled() -> None:
    out, f = _run(
        "bench.soak",
        "--agents=20",
        "--minutes=0.25",
        "--interval=1",
        "--drop-every=5",
        timeout=120,
    )
    assert f["drops"] > 0, out  # streams really were cut
    assert f["reports"] == f["applied"] > 0, out
    assert (f["lost"], f["duplicated"], f["unacked_after_drain"]) == (0, 0, 0), out
    assert f["rss_end_mib"] > 20, out


def test_local_checks_bench_prints_every_figure() -> None:
    out, f = _run("bench.local_checks", "--repeat=2", timeout=120)
    assert set(f) == {
        "no_checks_ms",
        "name_check_ms",
        "cmdline_check_ms",
        "cmdline_checks_32_ms",
        "textfile_unchanged_ms",
        "textfile_parsed_ms",
    }, out
    assert all(value > 0 for value in f.values()), out


def test_startup_measures_each_command_and_names_its_heavy_imports() -> None:
    # this checkout as its own baseline: the option works, and the same code imports alike
    out, f = _run("bench.startup", "--runs=1", f"--baseline={ROOT}", timeout=180)
    for label in ("tripline tickets list", "tripline rules check FILE", "tripline-agent --once"):
        assert any(line.lstrip().startswith(label) for line in out.splitlines()), (label, out)
    for name in ("tickets_list", "rules_check", "agent_once"):
        assert min(f[f"{name}_{m}_s"] for m in ("wall", "cpu", "imports")) > 0, out
    # the snapshot's two CPU samples are half a second apart: its wall time holds that
    assert f["agent_once_wall_s"] >= 0.5, out
    # what each command must not import (tests/unit/project/test_cli_imports.py holds the detail)
    assert f["tickets_list_heavy_imports"] == ["sqlalchemy"], out
    assert f["rules_check_heavy_imports"] == f["agent_once_heavy_imports"] == [], out
    for name in ("tickets_list", "rules_check", "agent_once"):
        heavy = f[f"{name}_heavy_imports"]
        assert f[f"baseline_{name}_heavy_imports"] == heavy, out
        assert f[f"baseline_{name}_wall_s"] > 0, out
