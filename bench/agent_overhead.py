"""What the agent costs a PC, side by side with node_exporter, measured in one run.

    python -m bench.agent_overhead              # 600 s window
    python -m bench.agent_overhead --duration 3600   # the hour-long RSS run

Runs a collector, the real agent as an office PC installs it (a venv holding only
``protos/`` and ``agent/``, see bench/agent_venv.py; ``--agent-from checkout`` runs it from
this checkout's environment instead) with its interval pushed by the collector, and
Debian's node_exporter (scraped every interval by a small HTTP client here), then reads
both from /proc over the same window: CPU seconds per agent interval and per node_exporter
scrape; RSS, PSS and USS at the start and end of the window; RSS's maximum and its trace
over the window. Loopback only; stops by itself. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/agent_overhead.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procstat
from bench.agent_venv import VenvFailed, agent_venv, python_of
from bench.collectorproc import (
    ROOT,
    CollectorFailed,
    CollectorProcess,
    child_env,
    free_port,
    plaintext_flags,
    scrape,
)

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
APPLIED = "tripline_collector_reports_applied_total"
MAX_DURATION = 7_200.0
TRACE_POINTS = 7  # RSS at 0, 1/6, ..., 6/6 of the window


class BenchError(Exception):
    """The run could not be carried out; the message says why."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.agent_overhead", description=__doc__.split("\n")[0]
    )
    p.add_argument("--duration", type=float, default=600.0, help="measured seconds (default 600)")
    p.add_argument("--interval", type=float, default=10.0, help="agent interval and scrape period")
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds after the first report (default 1 x interval)",
    )
    p.add_argument(
        "--node-exporter", default=NODE_EXPORTER, help=f"binary (default {NODE_EXPORTER})"
    )
    p.add_argument(
        "--agent-from",
        choices=["install", "checkout"],
        default="install",
        help="install: a cached venv with only protos+agent, as on a PC (default); "
        "checkout: this Python with the checkout on its path",
    )
    p.add_argument(
        "--agent-source",
        type=Path,
        default=ROOT,
        help="with --agent-from install: the checkout whose protos/ and agent/ are installed "
        "(default this one; another, e.g. `git worktree add /tmp/old COMMIT`, for a "
        "before/after pair)",
    )
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    p.add_argument("--keep", action="store_true", help="keep the logs and data directories")
    args = p.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION or args.interval <= 0:
        p.error(f"--duration must be in (0, {MAX_DURATION:g}] and --interval > 0")
    if args.warmup is None:
        args.warmup = args.interval
    return args


def _wait(check: Any, deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise BenchError(f"not within {deadline:g}s: {what}")
        time.sleep(0.2)


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return bytes(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _series(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def _memory(name: str, when: str, pid: int) -> dict[str, float]:
    m = procstat.memory(pid)
    return {
        f"{name}_{measure}_{when}_mib": getattr(m, measure) / procstat.MIB
        for measure in ("pss", "uss", "rss_anon", "rss_file")
    }


def _trace(sampler: procstat.Sampler) -> list[float]:
    """RSS (MiB) at evenly spaced points of the window: flat, or how it grew."""
    history = sampler.history or []
    if not history:
        return []
    last = len(history) - 1
    picks = sorted({round(last * i / (TRACE_POINTS - 1)) for i in range(TRACE_POINTS)})
    return [round(history[i][1] / procstat.MIB, 1) for i in picks]


def _figures(
    name: str, a: procstat.Snapshot, b: procstat.Snapshot, sampler: procstat.Sampler, units: int
) -> dict[str, Any]:
    cpu = b.cpu_seconds - a.cpu_seconds
    return {
        f"{name}_rss_trace_mib": _trace(sampler),
        f"{name}_cpu_seconds": cpu,
        f"{name}_units": units,
        f"{name}_cpu_ms_per_unit": 1000 * cpu / units if units else math.nan,
        f"{name}_rss_start_mib": a.rss_bytes / procstat.MIB,
        f"{name}_rss_end_mib": b.rss_bytes / procstat.MIB,
        f"{name}_rss_max_mib": max(sampler.max_rss, b.rss_bytes) / procstat.MIB,
        f"{name}_rss_peak_mib": b.peak_rss_bytes / procstat.MIB,
    }


def agent_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str], Path]:
    """How to start the agent: (argv prefix, environment, working directory)."""
    if args.agent_from == "checkout":
        return [sys.executable, "-m", "tripline.collector.cli", "agent"], child_env(), ROOT
    try:
        venv, built = agent_venv(args.agent_source.resolve())
    except VenvFailed as exc:
        raise BenchError(str(exc)) from None
    _line(f"agent: agent-only install {venv} ({'built now' if built else 'cached'})")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRIPLINE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    # not the checkout as working directory: nothing may come from the source tree
    return [str(python_of(venv)), "-m", "tripline.agent.cli"], env, Path(tempfile.gettempdir())


def run(args: argparse.Namespace) -> dict[str, Any]:
    argv, env, cwd = agent_command(args)
    flags = plaintext_flags("agent")
    tmp = Path(tempfile.mkdtemp(prefix="tripline-overhead-"))
    token = "tle_bench_" + secrets.token_urlsafe(16)
    collector = CollectorProcess(tmp / "collector", token, args.interval)
    agent: subprocess.Popen[bytes] | None = None
    exporter: subprocess.Popen[bytes] | None = None
    exporter_path = shutil.which(args.node_exporter)
    try:
        try:
            collector.start()
        except CollectorFailed as exc:
            raise BenchError(str(exc)) from None
        with open(tmp / "agent.log", "ab") as log:
            agent = subprocess.Popen(
                [
                    *argv,
                    "--collector",
                    collector.target,
                    "--enrollment-token",
                    token,
                    "--state-dir",
                    str(tmp / "agent"),
                    "--log-format",
                    "json",
                    *flags,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
            )
        exporter_url = ""
        if exporter_path:
            port = free_port()
            exporter_url = f"http://127.0.0.1:{port}/metrics"
            with open(tmp / "node_exporter.log", "ab") as log:
                exporter = subprocess.Popen(
                    [exporter_path, f"--web.listen-address=127.0.0.1:{port}"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            _wait(lambda: _get(exporter_url) is not None, 30, "node_exporter answering")

        def applied() -> float:
            return scrape(f"{collector.http}/metrics").value(APPLIED)

        def agent_alive() -> bool:
            if agent is not None and agent.poll() is not None:
                tail = (tmp / "agent.log").read_text(errors="replace")[-2000:]
                raise BenchError(f"the agent exited:\n{tail}")
            return True

        _wait(lambda: agent_alive() and applied() >= 1, 60, "the agent's first report applied")
        time.sleep(args.warmup)

        agent_sampler = procstat.Sampler(agent.pid, history=True).start()
        exporter_sampler = (
            procstat.Sampler(exporter.pid, history=True).start() if exporter else None
        )
        agent_a = procstat.snapshot(agent.pid)
        threads_a = procstat.thread_cpu(agent.pid)
        exporter_a = procstat.snapshot(exporter.pid) if exporter else None
        memory = _memory("agent", "start", agent.pid)
        if exporter:
            memory.update(_memory("node_exporter", "start", exporter.pid))
        applied_a = applied()
        started = time.monotonic()
        end = started + args.duration
        scrapes, series = 0, 0
        next_scrape = started + min(1.0, args.interval / 2)
        while time.monotonic() < end:
            agent_alive()
            if exporter_url and time.monotonic() >= next_scrape:
                body = _get(exporter_url)
                if body is not None:
                    scrapes += 1
                    series = _series(body)
                next_scrape += args.interval
            time.sleep(max(0.0, min(0.2, end - time.monotonic())))
        agent_b = procstat.snapshot(agent.pid)
        threads_b = procstat.thread_cpu(agent.pid)
        exporter_b = procstat.snapshot(exporter.pid) if exporter else None
        memory.update(_memory("agent", "end", agent.pid))
        if exporter:
            memory.update(_memory("node_exporter", "end", exporter.pid))
        agent_sampler.stop()
        reports = int(applied() - applied_a)
        intervals = max(1, round(args.duration / args.interval))
        figures: dict[str, Any] = {
            "duration": args.duration,
            "interval": args.interval,
            "agent_from": args.agent_from,
            "agent_reports": reports,
            **_figures("agent", agent_a, agent_b, agent_sampler, intervals),
            "agent_thread_cpu_ms_per_unit": {
                name: round(1000 * (spent - threads_a.get(name, 0.0)) / intervals, 2)
                for name, spent in sorted(threads_b.items())
            },
            **memory,
        }
        if exporter and exporter_a and exporter_b and exporter_sampler:
            exporter_sampler.stop()
            figures.update(
                _figures("node_exporter", exporter_a, exporter_b, exporter_sampler, scrapes)
            )
            figures["node_exporter_series"] = series
            figures["cpu_ratio"] = figures["agent_cpu_ms_per_unit"] / (
                figures["node_exporter_cpu_ms_per_unit"] or math.nan
            )
            for measure in ("rss", "pss", "uss"):
                figures[f"{measure}_ratio"] = (
                    figures[f"agent_{measure}_end_mib"]
                    / figures[f"node_exporter_{measure}_end_mib"]
                )
        return figures
    finally:
        for proc in (agent, exporter):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        collector.stop()
        if args.keep:
            print(f"kept: {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _line(text: str) -> None:
    print(text, flush=True)


def _memory_line(f: dict[str, Any], name: str) -> str:
    return (
        f"  {name} MiB: RSS start={f[f'{name}_rss_start_mib']:.1f} "
        f"end={f[f'{name}_rss_end_mib']:.1f} max={f[f'{name}_rss_max_mib']:.1f} "
        f"peak={f[f'{name}_rss_peak_mib']:.1f} (anon {f[f'{name}_rss_anon_end_mib']:.1f} + "
        f"file {f[f'{name}_rss_file_end_mib']:.1f})  "
        f"PSS start={f[f'{name}_pss_start_mib']:.1f} end={f[f'{name}_pss_end_mib']:.1f}  "
        f"USS start={f[f'{name}_uss_start_mib']:.1f} end={f[f'{name}_uss_end_mib']:.1f}  "
        f"RSS trace {f[f'{name}_rss_trace_mib']}"
    )


def report(f: dict[str, Any], exporter: str) -> None:
    _line(
        f"agent ({f['agent_from']}): {f['agent_cpu_ms_per_unit']:.1f} ms CPU per "
        f"{f['interval']:g}s interval "
        f"({f['agent_cpu_seconds']:.2f} s over {f['duration']:g} s, {f['agent_reports']} reports)"
    )
    _line(f"  agent threads, ms CPU per interval: {f['agent_thread_cpu_ms_per_unit']}")
    _line(_memory_line(f, "agent"))
    if f["agent_reports"] < f["agent_units"] / 2:
        _line(
            f"warning: only {f['agent_reports']} reports applied in {f['agent_units']} intervals: "
            "the agent was not reporting for part of the window (rerun with --keep, read its log)"
        )
    if "node_exporter_cpu_seconds" not in f:
        _line(
            f"node_exporter: skipped ({exporter} not found; "
            "apt-get install prometheus-node-exporter)"
        )
        return
    _line(
        f"node_exporter: {f['node_exporter_cpu_ms_per_unit']:.1f} ms CPU per scrape "
        f"({f['node_exporter_cpu_seconds']:.2f} s over {f['node_exporter_units']} scrapes, "
        f"{f['node_exporter_series']} series)"
    )
    _line(_memory_line(f, "node_exporter"))
    _line(
        f"ratio agent/node_exporter: CPU {f['cpu_ratio']:.2f}x  RSS {f['rss_ratio']:.2f}x  "
        f"PSS {f['pss_ratio']:.2f}x  USS {f['uss_ratio']:.2f}x"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _line(
        f"agent_overhead: interval {args.interval:g}s, warmup {args.warmup:g}s, "
        f"measuring {args.duration:g}s; CPU resolution {1000 / procstat.CLK_TCK:g} ms"
    )
    try:
        figures = run(args)
    except BenchError as exc:
        print(f"agent_overhead failed: {exc}", file=sys.stderr)
        return 1
    report(figures, args.node_exporter)
    if args.json:
        _line("json: " + json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
