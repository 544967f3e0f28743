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


def test_loadgen_runs_and_prints_its_figures() -> None:
    out, f = _run(
        "bench.loadgen",
        "--agents=20",
        "--duration=5",
        "--warmup=1",
        "--interval=1",
        "--alert-for=1",
        timeout=120,
    )
    for prefix in (
        "setup: 20 agents enrolled",
        "reports/s applied:",
        "ack latency ms: p50=",
        "collector CPU:",
        "/metrics scrape:",
        "/metrics vs generate_latest",
        "ticket latency s",
        "machine:",
    ):
        assert any(line.startswith(prefix) for line in out.splitlines()), (prefix, out)
    # 20 agents at 1 s for ~5 s: about 20 reports/s of ~60 samples each
    assert 10 <= f["reports_per_second"] <= 30, out
    assert f["samples_per_second"] >= 50 * f["reports_per_second"], out
    assert f["client_acked"] >= 0.9 * f["client_sent"] > 0, out
    assert 0 < f["ack_p50_ms"] <= f["ack_p99_ms"] <= f["ack_max_ms"], out
    assert f["collector_rss_mib"] > 20, out
    assert f["scrape_series"] >= 20 * 55, out
    assert f["tickets_expected"] == 1 and f["tickets_seen"] == 1, out
    assert f["ticket_latency_max_s"] < 5, out


def test_agent_overhead_runs_and_prints_its_figures() -> None:
    out, f = _run("bench.agent_overhead", "--duration=8", "--interval=2", "--warmup=2", timeout=120)
    assert out.splitlines()[1].startswith("agent: "), out
    assert f["agent_reports"] >= 2, out
    assert 15 < f["agent_rss_end_mib"] <= f["agent_rss_peak_mib"], out
    if shutil.which(NODE_EXPORTER) is None:
        assert "node_exporter: skipped" in out, out
        pytest.skip(f"{NODE_EXPORTER} not installed: only the agent half ran")
    assert "ratio agent/node_exporter: CPU" in out, out
    assert f["node_exporter_units"] >= 3 and f["node_exporter_series"] > 100, out
    assert f["node_exporter_rss_end_mib"] > 1, out


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
