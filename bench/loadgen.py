"""Load generator: N simulated agents against one collector process, and what it costs.

    python -m bench.loadgen --agents 1000 --duration 60

Starts a collector (unless --collector/--http name a running one), enrolls the agents over
the real Enroll RPC, opens one Connect stream each from --procs generator processes, and
reports every --interval from random offsets. A fraction of the agents fills its system
drive (filesystem_used_ratio 0.97) when the measured window starts, so FilesystemAlmostFull
fires after its `for`. Prints reports/s and samples/s applied (the collector's counters),
ack latency (client side, send to ack), the collector's CPU and RSS (/proc), the time and
size of a /metrics scrape (against prometheus_client's generate_latest over the same
data), and the time from a `for` elapsing to its ticket being committed. Loopback only;
stops by itself. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import queue
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/loadgen.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from bench import procstat
from bench.collectorproc import ROOT, CollectorProcess, scrape
from bench.latency import Histogram
from bench.simagent import Plan, WorkerSpec, worker_entry
from tripline.alerts.rules import load_rules

MAX_AGENTS = 50_000
MAX_DURATION = 3_600.0
PROBE_RULE = "FilesystemAlmostFull"
APPLIED = "tripline_collector_reports_applied_total"
SAMPLES = "tripline_collector_samples_received_total"


class BenchError(Exception):
    """The run could not be carried out; the message says why."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before measuring (default 1.5 x interval)",
    )
    p.add_argument("--interval", type=float, default=10.0, help="report interval (default 10)")
    p.add_argument("--procs", type=int, default=1, help="generator processes (default 1)")
    p.add_argument("--agents-per-channel", type=int, default=100)
    p.add_argument(
        "--full-fraction",
        type=float,
        default=0.01,
        help="share of agents whose system drive fills up (default 0.01, at least 1)",
    )
    p.add_argument(
        "--rules", type=Path, help="rule file for the collector (default: the built-in pack)"
    )
    p.add_argument(
        "--alert-for",
        type=float,
        default=20.0,
        help=f"without --rules: {PROBE_RULE}'s `for` in seconds, for the ticket probe (default 20)",
    )
    p.add_argument("--probe-rule", default=PROBE_RULE, help="rule the full agents trip")
    p.add_argument("--collector", help="HOST:PORT of a running collector (gRPC)")
    p.add_argument("--http", help="HOST:PORT of that collector's /metrics")
    p.add_argument("--token", help="with --collector: an enrollment token it accepts")
    p.add_argument("--pid", type=int, help="with --collector: its pid, to measure CPU and RSS")
    p.add_argument("--database", type=Path, help="with --collector: its SQLite file, for tickets")
    p.add_argument("--no-compare", action="store_true", help="skip the generate_latest comparison")
    p.add_argument("--keep", action="store_true", help="keep the collector's data directory")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = p.parse_args(argv)
    if not 1 <= args.agents <= MAX_AGENTS:
        p.error(f"--agents must be 1..{MAX_AGENTS}")
    if not 0 < args.duration <= MAX_DURATION:
        p.error(f"--duration must be in (0, {MAX_DURATION:g}]")
    if not 1 <= args.procs <= 16 or args.procs > args.agents:
        p.error("--procs must be 1..16 and at most --agents")
    if args.interval <= 0 or args.alert_for < 0:
        p.error("--interval must be > 0 and --alert-for >= 0")
    if bool(args.collector) != bool(args.http) or (args.collector and not args.token):
        p.error("--collector needs --http and --token")
    for option in ("collector", "http"):
        host = (getattr(args, option) or "127.0.0.1:0").rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            p.error(f"--{option} must be a loopback address")
    if args.warmup is None:
        args.warmup = 1.5 * args.interval
    return args


def bench_rules(path: Path, alert_for: float) -> Path:
    """The built-in rule pack with the probe rule's `for` shortened."""
    pack = yaml.safe_load((ROOT / "alerts/src/tripline/alerts/default_rules.yaml").read_text())
    for rule in pack["rules"]:
        if rule.get("name") == PROBE_RULE:
            rule["for"] = f"{alert_for:g}s"
    path.write_text(yaml.safe_dump(pack, sort_keys=False))
    return path


@dataclass
class Collected:
    """What the coordinator gathers during a run."""

    ready: dict[int, dict[str, Any]] = field(default_factory=dict)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    crossed: dict[str, float] = field(default_factory=dict)  # agent_id -> crossing time
    ticket_seen: dict[str, float] = field(default_factory=dict)  # agent_id -> wall time
    ticket_opened: dict[str, float] = field(default_factory=dict)  # agent_id -> opened_at
    failures: list[str] = field(default_factory=list)


class Coordinator:
    def __init__(self, args: argparse.Namespace, workers: list[multiprocessing.Process]) -> None:
        self.args = args
        self.workers = workers
        self.got = Collected()

    def drain(self, events: Any, timeout: float) -> None:
        """Take events from the generators for up to ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            try:
                event = events.get(timeout=max(0.0, left)) if left > 0 else events.get_nowait()
            except queue.Empty:
                return
            kind = event[0]
            if kind == "crossed":
                self.got.crossed[event[1]] = event[2]
            elif kind == "ready":
                self.got.ready[event[1]] = event[2]
            elif kind == "result":
                self.got.results[event[1]] = event[2]
            elif kind == "failed":
                self.got.failures.append(f"generator {event[1]}: {event[2]}")
            if time.monotonic() >= end:
                return

    def poll_tickets(self, database: Path | None, rule: str) -> None:
        if database is None or not database.exists():
            return
        waiting = [a for a in self.got.crossed if a not in self.got.ticket_seen]
        if not waiting:
            return
        now = time.time()
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)
            ) as db:
                rows = db.execute(
                    "SELECT agent_id, MIN(opened_at) FROM tickets WHERE rule = ? GROUP BY agent_id",
                    (rule,),
                ).fetchall()
        except sqlite3.Error:
            return
        for agent_id, opened_at in rows:
            if agent_id in self.got.crossed and agent_id not in self.got.ticket_seen:
                self.got.ticket_seen[agent_id] = now
                self.got.ticket_opened[agent_id] = opened_at

    def alive(self) -> bool:
        return all(w.is_alive() for w in self.workers)


def quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        return math.nan, math.nan, math.nan
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return pick(0.5), pick(0.99), ordered[-1]


class _Families(Collector):
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


def generate_latest_seconds(text: str) -> float:
    """prometheus_client's generate_latest over the families parsed from ``text`` (best of 2)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(text_string_to_metric_families(text))))
    best = math.inf
    for _ in range(2):
        started = time.perf_counter()
        generate_latest(registry)
        best = min(best, time.perf_counter() - started)
    return best


def promtool_check(text: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        return "not run (promtool not on PATH)"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=300
    )
    if result.returncode == 0:
        return "ok"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return f"FAILED ({len(lines)} lines): " + " | ".join(lines[:3])


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tripline-loadgen-"))
    collector: CollectorProcess | None = None
    try:
        if args.collector:
            target, http, token = args.collector, f"http://{args.http}", args.token
            pid, database, probe_for = args.pid, args.database, None
            if args.rules:
                probe_for = _rule_for(args.rules, args.probe_rule)
        else:
            rules = args.rules or bench_rules(tmp / "bench-rules.yaml", args.alert_for)
            probe_for = _rule_for(rules, args.probe_rule)
            token = "tle_bench_" + secrets.token_urlsafe(16)
            collector = CollectorProcess(tmp / "collector", token, args.interval, rules).start()
            target, http = collector.target, collector.http
            pid, database = collector.pid, collector.database
        figures = _measure(args, target, http, token, pid, database, probe_for)
        if collector is not None:
            code = collector.stop()
            figures["collector_exit_code"] = code
            if code != 0:
                figures["collector_log_tail"] = collector.log_tail()
        return figures
    finally:
        if collector is not None:
            collector.stop()
        if args.keep:
            print(f"kept: {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _rule_for(path: Path, name: str) -> float | None:
    for rule in load_rules(path).rules:
        if rule.name == name:
            return rule.for_seconds
    return None


def _measure(
    args: argparse.Namespace,
    target: str,
    http: str,
    token: str,
    pid: int | None,
    database: Path | None,
    probe_for: float | None,
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "agents": args.agents,
        "procs": args.procs,
        "interval": args.interval,
        "duration": args.duration,
        "warmup": args.warmup,
        "cores": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    full_count = 0 if args.full_fraction <= 0 else max(1, round(args.agents * args.full_fraction))
    step = args.agents / full_count if full_count else 0
    full = frozenset(int(i * step) for i in range(full_count))
    per = math.ceil(args.agents / args.procs)
    controls, workers = [], []
    for index in range(args.procs):
        first = index * per
        spec = WorkerSpec(
            index=index,
            target=target,
            token=token,
            first=first,
            count=min(per, args.agents - first),
            interval=args.interval,
            full=frozenset(n for n in full if first <= n < first + per),
            agents_per_channel=args.agents_per_channel,
            seed=args.seed,
        )
        control = context.Queue()
        worker = context.Process(target=worker_entry, args=(spec, events, control), daemon=True)
        worker.start()
        controls.append(control)
        workers.append(worker)
    coord = Coordinator(args, workers)
    try:
        return _drive(args, coord, events, controls, http, pid, database, probe_for, figures)
    finally:
        for control in controls:
            control.put(("stop",))
        for worker in workers:
            worker.join(15)
            if worker.is_alive():
                worker.kill()


def _drive(
    args: argparse.Namespace,
    coord: Coordinator,
    events: Any,
    controls: list[Any],
    http: str,
    pid: int | None,
    database: Path | None,
    probe_for: float | None,
    figures: dict[str, Any],
) -> dict[str, Any]:
    # Enrolling is a committed insert per agent: allow a generous, still bounded, time.
    setup_deadline = time.monotonic() + 120 + 0.05 * args.agents
    while len(coord.got.ready) < args.procs:
        coord.drain(events, 0.5)
        if coord.got.failures:
            raise BenchError("; ".join(coord.got.failures))
        if not coord.alive() and len(coord.got.ready) < args.procs:
            raise BenchError("a generator process died while enrolling")
        if time.monotonic() > setup_deadline:
            raise BenchError("agents not enrolled and connected in time")
    ready = list(coord.got.ready.values())
    figures["enroll_seconds"] = max(r["enroll_seconds"] for r in ready)
    figures["connect_seconds"] = max(r["connect_seconds"] for r in ready)
    figures["agents_ready"] = sum(r["agents"] for r in ready)
    figures["setup_failures"] = sum(r["failures"] for r in ready)
    if figures["setup_failures"]:
        figures["setup_first_failure"] = next(r["first_failure"] for r in ready if r["failures"])
    _line(
        f"setup: {figures['agents_ready']} agents enrolled in {figures['enroll_seconds']:.1f} s, "
        f"streams open in {figures['connect_seconds']:.1f} s "
        f"({figures['setup_failures']} failures)"
    )

    go = time.time() + 1.0
    plan = Plan(
        go=go,
        measure_from=go + args.warmup,
        measure_until=go + args.warmup + args.duration,
        deadline=go + args.warmup + args.duration + 600,
    )
    for control in controls:
        control.put(("go", plan))
    worker_pids = [w.pid for w in coord.workers if w.pid is not None]
    sampler = procstat.Sampler(pid).start() if pid else None

    def wait_until(at: float) -> None:
        while time.time() < at:
            coord.drain(events, min(0.2, max(0.0, at - time.time())))
            coord.poll_tickets(database, args.probe_rule)
            if not coord.alive():
                raise BenchError("a generator process died: " + "; ".join(coord.got.failures))

    wait_until(plan.measure_from)
    cpu_a = procstat.snapshot(pid) if pid else None
    gen_a = [procstat.snapshot(p) for p in worker_pids]
    machine_a = procstat.machine_busy_seconds()
    if sampler:
        sampler.reset_max()
    scrape_a = scrape(f"{http}/metrics")
    wait_until(plan.measure_until)
    cpu_b = procstat.snapshot(pid) if pid else None
    gen_b = [procstat.snapshot(p) for p in worker_pids]
    machine_b = procstat.machine_busy_seconds()
    scrape_b = scrape(f"{http}/metrics")  # the generators keep reporting meanwhile
    for control in controls:
        control.put(("stop",))
    result_deadline = time.monotonic() + 60
    while len(coord.got.results) < args.procs and time.monotonic() < result_deadline:
        coord.drain(events, 0.2)
        coord.poll_tickets(database, args.probe_rule)
        if coord.got.failures:
            break
    if sampler:
        sampler.stop()
    # Crossings happen in the first interval of the window; give late tickets a moment.
    if probe_for is not None:
        wait_tickets = time.monotonic() + 5
        while time.monotonic() < wait_tickets and len(coord.got.ticket_seen) < len(
            coord.got.crossed
        ):
            coord.poll_tickets(database, args.probe_rule)
            time.sleep(0.1)

    window = scrape_b.started - scrape_a.started
    applied = scrape_b.value(APPLIED) - scrape_a.value(APPLIED)
    samples = scrape_b.value(SAMPLES) - scrape_a.value(SAMPLES)
    figures["reports_per_second"] = applied / window
    figures["samples_per_second"] = samples / window
    histogram = Histogram()
    totals = {"sent": 0, "acked": 0, "stream_errors": 0, "reconnects": 0, "lost": 0}
    for result in coord.got.results.values():
        for key in totals:
            totals[key] += result[key]
        histogram.merge(Histogram(**result["latency"]))
    figures.update({f"client_{k}": v for k, v in totals.items()})
    figures["generators_reported"] = len(coord.got.results)
    figures["ack_p50_ms"] = histogram.quantile(0.5) * 1000
    figures["ack_p99_ms"] = histogram.quantile(0.99) * 1000
    figures["ack_max_ms"] = histogram.maximum * 1000
    wall = plan.measure_until - plan.measure_from
    if cpu_a and cpu_b:
        cpu = cpu_b.cpu_seconds - cpu_a.cpu_seconds
        figures["collector_cpu_percent"] = 100 * cpu / (cpu_b.at - cpu_a.at)
        figures["collector_cpu_ms_per_report"] = 1000 * cpu / applied if applied else math.nan
        figures["collector_rss_mib"] = cpu_b.rss_bytes / procstat.MIB
        figures["collector_rss_max_mib"] = (sampler.max_rss if sampler else 0) / procstat.MIB
        figures["collector_rss_peak_mib"] = cpu_b.peak_rss_bytes / procstat.MIB
    generators = sum(b.cpu_seconds - a.cpu_seconds for a, b in zip(gen_a, gen_b, strict=True))
    figures["generator_cpu_percent"] = 100 * generators / wall
    busy = machine_b[0] - machine_a[0]
    figures["machine_busy_percent"] = 100 * busy / wall
    figures["scrape_seconds"] = scrape_b.seconds
    figures["scrape_bytes"] = scrape_b.size
    figures["scrape_series"] = sum(
        1 for line in scrape_b.text.splitlines() if line and not line.startswith("#")
    )
    figures["ticket_probe_for"] = probe_for
    figures["tickets_expected"] = len(coord.got.crossed)
    figures["tickets_seen"] = len(coord.got.ticket_seen)
    if probe_for is not None:
        seen = [
            coord.got.ticket_seen[a] - (coord.got.crossed[a] + probe_for)
            for a in coord.got.ticket_seen
        ]
        opened = [
            coord.got.ticket_opened[a] - (coord.got.crossed[a] + probe_for)
            for a in coord.got.ticket_opened
        ]
        figures["ticket_latency_p50_s"], _, figures["ticket_latency_max_s"] = quantiles(seen)
        figures["ticket_opened_p50_s"], _, figures["ticket_opened_max_s"] = quantiles(opened)
        figures["ticket_window_ok"] = args.duration >= args.interval + probe_for + 2
    if not args.no_compare:
        idle = min((scrape(f"{http}/metrics") for _ in range(2)), key=lambda s: s.seconds)
        figures["scrape_idle_seconds"] = idle.seconds
        figures["generate_latest_seconds"] = generate_latest_seconds(idle.text)
        figures["scrape_speedup"] = figures["generate_latest_seconds"] / idle.seconds
        figures["promtool"] = promtool_check(idle.text)
    figures["failures"] = coord.got.failures
    return figures


def _line(text: str) -> None:
    print(text, flush=True)


def report(f: dict[str, Any]) -> None:
    _line(
        f"reports/s applied: {f['reports_per_second']:.1f}  "
        f"samples/s applied: {f['samples_per_second']:.0f}  "
        f"(expected {f['agents'] / f['interval']:.1f} reports/s)"
    )
    _line(
        f"ack latency ms: p50={f['ack_p50_ms']:.1f} p99={f['ack_p99_ms']:.1f} "
        f"max={f['ack_max_ms']:.1f}  (acked {f['client_acked']} of {f['client_sent']} sent "
        f"in the window; stream errors {f['client_stream_errors']}, lost {f['client_lost']})"
    )
    if "collector_cpu_percent" in f:
        _line(
            f"collector CPU: {f['collector_cpu_percent']:.1f}% of one core, "
            f"{f['collector_cpu_ms_per_report']:.2f} ms per report  "
            f"RSS MiB: end={f['collector_rss_mib']:.0f} max={f['collector_rss_max_mib']:.0f} "
            f"peak={f['collector_rss_peak_mib']:.0f}"
        )
    else:
        _line("collector CPU: not measured (no --pid)")
    _line(
        f"/metrics scrape: {f['scrape_seconds']:.3f} s, {f['scrape_bytes'] / 1e6:.1f} MB, "
        f"{f['scrape_series']} series (under load)"
    )
    if "generate_latest_seconds" in f:
        _line(
            f"/metrics vs generate_latest (idle, same data): {f['scrape_idle_seconds']:.3f} s vs "
            f"{f['generate_latest_seconds']:.3f} s = {f['scrape_speedup']:.2f}x  "
            f"promtool check metrics: {f['promtool']}"
        )
    if f["ticket_probe_for"] is None:
        _line("ticket latency: not measured (probe rule unknown)")
    else:
        note = "" if f["ticket_window_ok"] else "  (duration too short for every crossing)"
        _line(
            f"ticket latency s (committed - crossing - for {f['ticket_probe_for']:g}s): "
            f"p50={f['ticket_latency_p50_s']:.2f} max={f['ticket_latency_max_s']:.2f}  "
            f"opened_at: p50={f['ticket_opened_p50_s']:.2f} max={f['ticket_opened_max_s']:.2f}  "
            f"({f['tickets_seen']} of {f['tickets_expected']} tickets){note}"
        )
    load = f["loadavg_before"]
    _line(
        f"machine: {f['cores']} cores, busy {f['machine_busy_percent']:.0f}% of one core in the "
        f"window (generators {f['generator_cpu_percent']:.0f}%, collector "
        f"{f.get('collector_cpu_percent', math.nan):.0f}%), "
        f"loadavg before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    for failure in f["failures"]:
        _line(f"failure: {failure}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _line(
        f"loadgen: {args.agents} agents, {args.procs} generator process(es), interval "
        f"{args.interval:g}s, warmup {args.warmup:g}s, measuring {args.duration:g}s"
    )
    try:
        figures = run(args)
    except BenchError as exc:
        print(f"loadgen failed: {exc}", file=sys.stderr)
        return 1
    report(figures)
    if args.json:
        _line("json: " + json.dumps(figures, default=str))
    ok = (
        not figures["failures"]
        and figures.get("collector_exit_code", 0) == 0
        and figures["generators_reported"] == args.procs
    )
    if figures.get("collector_log_tail"):
        print(figures["collector_log_tail"], file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
