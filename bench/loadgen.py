"""Load generator: N simulated PCs against one collector, measured against bare gRPC.

    python -m bench.loadgen --agents 1000 --duration 60

Runs twice on the same machine with the same generator, report bytes, connection shape
and rate. First against the transport baseline (bench/bareserver.py: a grpc.aio servicer
that acks each report and does nothing else), then against a collector process (unless
--collector names a running one). By default each simulated PC has its own gRPC channel
(its own TCP connection and TLS session, the collector's certificate verified against a
throwaway CA), as a real fleet dials; --agents-per-channel and --plaintext are there for
comparison. Connections open at --ramp per second.

Each PC enrolls over the real Enroll RPC, opens one Connect stream and reports every
--interval from a random offset. A fraction of the PCs fills its system drive
(filesystem_used_ratio 0.97) when the measured window starts, so FilesystemAlmostFull
fires after its `for`. Prints, for both servers, reports/s acknowledged or applied, ack
latency (client side, send to ack), CPU and RSS from /proc, and every collector figure as
a ratio to the baseline's; for the collector also a /metrics scrape under load (against
prometheus_client's generate_latest over the same data) and the time from a `for`
elapsing to its ticket being committed; and how much of the machine the generators took.
Loopback only; stops by itself. See bench/README.md.
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
from typing import Any, Protocol

if __package__ in (None, ""):  # run as `python bench/loadgen.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from bench import procstat
from bench.bareserver import BareServer, BareServerFailed, BareSpec, start_bare_server
from bench.collectorproc import ROOT, CollectorFailed, CollectorProcess, Scrape, scrape
from bench.latency import Histogram
from bench.scraper import Scraper
from bench.simagent import Plan, WorkerSpec, worker_entry
from bench.tlsfiles import make_tls
from tripline.alerts.rules import load_rules

MAX_AGENTS = 50_000
MAX_DURATION = 3_600.0
PROBE_RULE = "FilesystemAlmostFull"
APPLIED = "tripline_collector_reports_applied_total"
SAMPLES = "tripline_collector_samples_received_total"
# Sockets and files a server or generator holds besides one socket per connection.
FD_HEADROOM = 200
# Figures the collector and the baseline both have: printed side by side with their ratio.
COMPARED = (
    ("reports_per_second", "reports/s acked (applied)", "{:.1f}"),
    ("ack_p50_ms", "ack p50 ms", "{:.1f}"),
    ("ack_p99_ms", "ack p99 ms", "{:.1f}"),
    ("ack_max_ms", "ack max ms", "{:.1f}"),
    ("cpu_percent", "server CPU % of one core", "{:.1f}"),
    ("cpu_ms_per_report", "server CPU ms per report", "{:.3f}"),
    ("rss_mib", "server RSS MiB (end)", "{:.0f}"),
    ("rss_max_mib", "server RSS MiB (max)", "{:.0f}"),
)


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
    p.add_argument(
        "--agents-per-channel",
        type=int,
        default=1,
        help="agents sharing one gRPC channel, one TCP connection (default 1, as a real fleet)",
    )
    p.add_argument(
        "--wire",
        choices=("table", "named"),
        default="table",
        help="report form: 'table' interns series once per stream where the Welcome offers "
        "a table (default, as the agent does), 'named' sends named samples as older agents",
    )
    p.add_argument(
        "--plaintext",
        action="store_true",
        help="dial without TLS (for comparison; default: TLS, server certificate verified)",
    )
    p.add_argument(
        "--ramp",
        type=float,
        default=250.0,
        help="new connections per second over all generators (default 250; 0: no ramp)",
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="skip the bare gRPC baseline (no ratios)"
    )
    p.add_argument(
        "--baseline-duration",
        type=float,
        default=None,
        help="measured seconds against the baseline (default: --duration)",
    )
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
    p.add_argument("--tls-ca", type=Path, help="with --collector: the CA its certificate chains to")
    p.add_argument(
        "--tls-server-name", help="with --collector: the name its certificate carries, if not HOST"
    )
    p.add_argument("--pid", type=int, help="with --collector: its pid, to measure CPU and RSS")
    p.add_argument("--database", type=Path, help="with --collector: its SQLite file, for tickets")
    p.add_argument("--no-compare", action="store_true", help="skip the generate_latest comparison")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="start the collector with --workers N (default 1)",
    )
    p.add_argument(
        "--scrape-interval",
        type=float,
        default=0.0,
        help="scrape the collector's /metrics (gzip accepted) every S seconds during the "
        "window, as Prometheus would; 0: only the window's two scrapes (default 0)",
    )
    p.add_argument("--keep", action="store_true", help="keep the collector's data directory")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = p.parse_args(argv)
    if not 1 <= args.agents <= MAX_AGENTS:
        p.error(f"--agents must be 1..{MAX_AGENTS}")
    if not 0 < args.duration <= MAX_DURATION:
        p.error(f"--duration must be in (0, {MAX_DURATION:g}]")
    if args.baseline_duration is None:
        args.baseline_duration = args.duration
    if not 0 < args.baseline_duration <= MAX_DURATION:
        p.error(f"--baseline-duration must be in (0, {MAX_DURATION:g}]")
    if not 1 <= args.procs <= 16 or args.procs > args.agents:
        p.error("--procs must be 1..16 and at most --agents")
    if not 1 <= args.agents_per_channel <= 1000:
        p.error("--agents-per-channel must be 1..1000")
    if not 1 <= args.workers <= 64:
        p.error("--workers must be 1..64")
    if args.scrape_interval < 0:
        p.error("--scrape-interval must be >= 0")
    if args.interval <= 0 or args.alert_for < 0 or args.ramp < 0:
        p.error("--interval must be > 0, --alert-for and --ramp >= 0")
    if bool(args.collector) != bool(args.http) or (args.collector and not args.token):
        p.error("--collector needs --http and --token")
    if args.collector and not (args.plaintext or args.tls_ca):
        p.error("--collector needs --tls-ca FILE (the CA its certificate chains to) or --plaintext")
    if (args.tls_ca or args.tls_server_name) and not args.collector:
        p.error("--tls-ca and --tls-server-name go with --collector")
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
    def __init__(
        self, args: argparse.Namespace, workers: list[multiprocessing.process.BaseProcess]
    ) -> None:
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


class Hooks(Protocol):
    """What differs between measuring the collector and measuring the baseline."""

    def applied(self) -> float:
        """Reports the server has applied (acknowledged) so far, read now."""

    def tick(self, coord: Coordinator) -> None:
        """Called about every 0.2 s while the generators run."""

    def window(self, is_open: bool) -> None:
        """Called when the measured window opens and when it closes."""


class BareHooks:
    def __init__(self, server: BareServer) -> None:
        self.server = server

    def applied(self) -> float:
        return float(self.server.acked_total())

    def tick(self, coord: Coordinator) -> None:
        pass

    def window(self, is_open: bool) -> None:
        pass


class CollectorHooks:
    """Reads the applied counter from /metrics; the window's scrapes are kept."""

    def __init__(
        self, http: str, database: Path | None, rule: str, scrape_interval: float = 0.0
    ) -> None:
        self.http = http
        self.database = database
        self.rule = rule
        self.scrapes: list[Scrape] = []
        self.scrape_interval = scrape_interval
        self.scraper: Scraper | None = None

    def applied(self) -> float:
        page = scrape(f"{self.http}/metrics")  # the generators keep reporting meanwhile
        self.scrapes.append(page)
        return page.value(APPLIED)

    def tick(self, coord: Coordinator) -> None:
        coord.poll_tickets(self.database, self.rule)

    def window(self, is_open: bool) -> None:
        if is_open and self.scrape_interval > 0:
            self.scraper = Scraper(f"{self.http}/metrics", self.scrape_interval).start()
        elif not is_open and self.scraper is not None:
            self.scraper.stop()


@dataclass(frozen=True)
class Target:
    """Where the generators dial and how."""

    address: str  # HOST:PORT
    root_certificates: bytes | None  # None: plaintext
    server_name: str | None = None
    pid: int | None = None  # the server process (with its descendants), for CPU and RSS

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


def sockets_per_process(
    channels: int, workers: int, procs: int, *, baseline: bool
) -> tuple[int, int]:
    """(the most connections one server process holds, one generator process holds).

    One socket per connection in each. With --workers W the kernel spreads connections
    over W collector processes (by hash: 5% slack); the bare baseline is one process."""
    per_worker = math.ceil(channels / workers * (1.05 if workers > 1 else 1))
    return max(per_worker, channels if baseline else 0), math.ceil(channels / procs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tripline-loadgen-"))
    collector: CollectorProcess | None = None
    figures: dict[str, Any] = {
        "agents": args.agents,
        "procs": args.procs,
        "interval": args.interval,
        "duration": args.duration,
        "baseline_duration": None if args.no_baseline else args.baseline_duration,
        "warmup": args.warmup,
        "cores": os.cpu_count(),
        "tls": not args.plaintext,
        "agents_per_channel": args.agents_per_channel,
        "wire": args.wire,
        "channels": _channels(args),
        "ramp_per_second": args.ramp,
        "scrape_interval": args.scrape_interval,
        "workers": args.workers,
        "nofile_limit": procstat.raise_nofile_limit(),  # inherited by every child
    }
    per_server, per_proc = sockets_per_process(
        figures["channels"], args.workers, args.procs, baseline=not args.no_baseline
    )
    if figures["nofile_limit"] < max(per_server, per_proc) + FD_HEADROOM:
        raise BenchError(
            f"{figures['channels']} connections need about {per_server + FD_HEADROOM} "
            f"open files in each server process, the hard limit is {figures['nofile_limit']}: "
            "raise it (ulimit -Hn, or LimitNOFILE= in a unit), use --workers, --procs, or "
            "--agents-per-channel"
        )
    try:
        tls = None if args.plaintext else make_tls(tmp / "tls")
        if not args.no_baseline:
            _line(f"baseline: bare grpc.aio servicer, {_shape(args)}")
            try:
                bare = start_bare_server(
                    BareSpec(args.interval, tls.cert if tls else None, tls.key if tls else None)
                )
            except BareServerFailed as exc:
                raise BenchError(str(exc)) from None
            try:
                target = Target(bare.target, tls.ca_bytes() if tls else None, pid=bare.pid)
                phase, _ = _phase(args, "bare", target, args.baseline_duration, BareHooks(bare))
                phase["bare_alive_to_the_end"] = bare.process.is_alive()
            finally:
                bare.stop()
            figures.update(phase)
        _line(f"collector: {_shape(args)}")
        if args.collector:
            root = args.tls_ca.read_bytes() if args.tls_ca else None
            target = Target(args.collector, root, args.tls_server_name, args.pid)
            http, token, database = f"http://{args.http}", args.token, args.database
            probe_for = _rule_for(args.rules, args.probe_rule) if args.rules else None
        else:
            rules = args.rules or bench_rules(tmp / "bench-rules.yaml", args.alert_for)
            probe_for = _rule_for(rules, args.probe_rule)
            token = "tle_bench_" + secrets.token_urlsafe(16)
            try:
                workers = ("--workers", str(args.workers)) if args.workers > 1 else ()
                collector = CollectorProcess(
                    tmp / "collector", token, args.interval, rules, extra=workers, tls=tls
                ).start()
            except CollectorFailed as exc:
                raise BenchError(str(exc)) from None
            target = Target(collector.target, tls.ca_bytes() if tls else None, pid=collector.pid)
            http, database = collector.http, collector.database
        hooks = CollectorHooks(http, database, args.probe_rule, args.scrape_interval)
        phase, coord = _phase(args, "collector", target, args.duration, hooks, token=token)
        figures.update(phase)
        figures.update(_collector_figures(args, hooks, coord, probe_for, http))
        if collector is not None:
            code = collector.stop()
            figures["collector_exit_code"] = code
            if code != 0:
                figures["collector_log_tail"] = collector.log_tail()
        if not args.no_baseline:
            figures.update(ratios(figures))
        return figures
    finally:
        if collector is not None:
            collector.stop()
        if args.keep:
            print(f"kept: {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _channels(args: argparse.Namespace) -> int:
    per = math.ceil(args.agents / args.procs)
    counts = [min(per, args.agents - i * per) for i in range(args.procs)]
    return sum(math.ceil(c / args.agents_per_channel) for c in counts if c > 0)


def _shape(args: argparse.Namespace) -> str:
    tls = "plaintext" if args.plaintext else "TLS (server certificate verified)"
    return (
        f"{args.agents} agents, {args.agents_per_channel} per channel ({_channels(args)} "
        f"connections), {tls}, {args.procs} generator process(es), ramp "
        f"{args.ramp:g} connections/s"
    )


def ratios(f: dict[str, Any]) -> dict[str, float]:
    """Every compared collector figure divided by the baseline's, as ``ratio_<figure>``."""
    out: dict[str, float] = {}
    for name, _, _ in COMPARED:
        collector, bare = f.get(_collector_name(name)), f.get(f"bare_{name}")
        if collector is None or bare is None:
            continue
        out[f"ratio_{name}"] = collector / bare if bare else math.nan
    return out


def _collector_name(name: str) -> str:
    # The collector's own figures keep their historical names (bench/README.md rows).
    server = ("cpu_percent", "cpu_ms_per_report", "rss_mib", "rss_max_mib")
    return f"collector_{name}" if name in server else name


def _rule_for(path: Path, name: str) -> float | None:
    for rule in load_rules(path).rules:
        if rule.name == name:
            return rule.for_seconds
    return None


def _spawn(
    args: argparse.Namespace, target: Target, token: str, full: frozenset[int]
) -> tuple[Any, list[Any], list[multiprocessing.process.BaseProcess]]:
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    per = math.ceil(args.agents / args.procs)
    controls: list[Any] = []
    workers: list[multiprocessing.process.BaseProcess] = []
    for index in range(args.procs):
        first = index * per
        spec = WorkerSpec(
            index=index,
            target=target.address,
            token=token,
            first=first,
            count=min(per, args.agents - first),
            interval=args.interval,
            full=frozenset(n for n in full if first <= n < first + per),
            agents_per_channel=args.agents_per_channel,
            wire=args.wire,
            seed=args.seed,
            root_certificates=target.root_certificates,
            server_name=target.server_name,
            ramp_per_second=args.ramp / args.procs,
        )
        control = context.Queue()
        worker = context.Process(target=worker_entry, args=(spec, events, control), daemon=True)
        worker.start()
        controls.append(control)
        workers.append(worker)
    return events, controls, workers


def _phase(
    args: argparse.Namespace,
    label: str,
    target: Target,
    duration: float,
    hooks: Hooks,
    token: str = "bench",
) -> tuple[dict[str, Any], Coordinator]:
    """Generators against one server: setup, warm-up, the measured window, the drain.

    Figures about the server are named ``<label>_...``; the rest too, except the
    collector's (unprefixed, as bench/README.md's rows have them)."""
    full_count = 0 if args.full_fraction <= 0 else max(1, round(args.agents * args.full_fraction))
    step = args.agents / full_count if full_count else 0
    full = frozenset(int(i * step) for i in range(full_count))
    events, controls, workers = _spawn(args, target, token, full)
    coord = Coordinator(args, workers)
    try:
        out = _drive(args, label, coord, events, controls, target, duration, hooks)
    finally:
        for control in controls:
            control.put(("stop",))
        for worker in workers:
            worker.join(15)
            if worker.is_alive():
                worker.kill()
    prefix = "" if label == "collector" else f"{label}_"
    named = {}
    for key, value in out.items():
        if key.startswith("server_"):
            named[f"{label}_{key[len('server_') :]}"] = value
        else:
            named[prefix + key] = value
    return named, coord


def _drive(
    args: argparse.Namespace,
    label: str,
    coord: Coordinator,
    events: Any,
    controls: list[Any],
    target: Target,
    duration: float,
    hooks: Hooks,
) -> dict[str, Any]:
    figures: dict[str, Any] = {"loadavg_before": os.getloadavg()}
    # Enrolling is a committed insert per agent, and connections open at the ramp's pace:
    # allow a generous, still bounded, time.
    ramp_seconds = _channels(args) / args.ramp if args.ramp else 0.0
    setup_deadline = time.monotonic() + 120 + 0.05 * args.agents + ramp_seconds
    while len(coord.got.ready) < args.procs:
        coord.drain(events, 0.5)
        if coord.got.failures:
            raise BenchError(f"{label}: " + "; ".join(coord.got.failures))
        if not coord.alive() and len(coord.got.ready) < args.procs:
            raise BenchError(f"{label}: a generator process died while enrolling")
        if time.monotonic() > setup_deadline:
            raise BenchError(f"{label}: agents not enrolled and connected in time")
    ready = list(coord.got.ready.values())
    figures["enroll_seconds"] = max(r["enroll_seconds"] for r in ready)
    figures["connect_seconds"] = max(r["connect_seconds"] for r in ready)
    figures["agents_ready"] = sum(r["agents"] for r in ready)
    figures["generator_channels"] = sum(r["channels"] for r in ready)
    figures["setup_failures"] = sum(r["failures"] for r in ready)
    if figures["setup_failures"]:
        figures["setup_first_failure"] = next(r["first_failure"] for r in ready if r["failures"])
    _line(
        f"{label} setup: {figures['agents_ready']} agents enrolled in "
        f"{figures['enroll_seconds']:.1f} s, streams open in {figures['connect_seconds']:.1f} s "
        f"({figures['setup_failures']} failures)"
    )

    go = time.time() + 1.0
    plan = Plan(
        go=go,
        measure_from=go + args.warmup,
        measure_until=go + args.warmup + duration,
        deadline=go + args.warmup + duration + 600,
    )
    for control in controls:
        control.put(("go", plan))
    worker_pids = [w.pid for w in coord.workers if w.pid is not None]
    pid = target.pid
    sampler = procstat.Sampler(pid, tree=True).start() if pid else None

    def wait_until(at: float) -> None:
        while time.time() < at:
            coord.drain(events, min(0.2, max(0.0, at - time.time())))
            hooks.tick(coord)
            if not coord.alive():
                raise BenchError(
                    f"{label}: a generator process died: " + "; ".join(coord.got.failures)
                )

    wait_until(plan.measure_from)
    cpu_a = procstat.tree_snapshot(pid) if pid else None
    gen_a = [procstat.snapshot(p) for p in worker_pids]
    machine_a = procstat.machine_busy_seconds()
    if sampler:
        sampler.reset_max()
    started_a = time.monotonic()
    applied_a = hooks.applied()
    hooks.window(True)
    try:
        wait_until(plan.measure_until)
    finally:
        hooks.window(False)
    cpu_b = procstat.tree_snapshot(pid) if pid else None
    gen_b = [procstat.snapshot(p) for p in worker_pids]
    machine_b = procstat.machine_busy_seconds()
    if pid:
        figures["server_connections"] = procstat.established_connections(
            target.port, procstat.tree_pids(pid)
        )
    started_b = time.monotonic()
    applied_b = hooks.applied()
    for control in controls:
        control.put(("stop",))
    result_deadline = time.monotonic() + 60
    while len(coord.got.results) < args.procs and time.monotonic() < result_deadline:
        coord.drain(events, 0.2)
        hooks.tick(coord)
        if coord.got.failures:
            break
    if sampler:
        sampler.stop()
    figures["loadavg_after"] = os.getloadavg()

    window = started_b - started_a
    applied = applied_b - applied_a
    figures["reports_per_second"] = applied / window
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
        figures["server_cpu_percent"] = 100 * cpu / (cpu_b.at - cpu_a.at)
        figures["server_cpu_ms_per_report"] = 1000 * cpu / applied if applied else math.nan
        figures["server_rss_mib"] = cpu_b.rss_bytes / procstat.MIB
        figures["server_rss_max_mib"] = (
            max(sampler.max_rss if sampler else 0, cpu_b.rss_bytes) / procstat.MIB
        )
        figures["server_rss_peak_mib"] = cpu_b.peak_rss_bytes / procstat.MIB
    generators = sum(b.cpu_seconds - a.cpu_seconds for a, b in zip(gen_a, gen_b, strict=True))
    cores = os.cpu_count() or 1
    figures["generator_cpu_percent"] = 100 * generators / wall
    figures["generator_machine_percent"] = 100 * generators / (wall * cores)
    figures["generator_rss_mib"] = sum(b.rss_bytes for b in gen_b) / procstat.MIB
    busy = machine_b[0] - machine_a[0]
    figures["machine_busy_percent"] = 100 * busy / wall
    figures["failures"] = list(coord.got.failures)
    return figures


def offline_tickets(database: Path | None, until: float) -> int | None:
    """AgentOffline tickets opened by wall time `until` (the window's end: the PCs stop
    reporting after it) in the collector's SQLite file; None when not readable."""
    if database is None or not database.exists():
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
        ) as db:
            row = db.execute(
                "SELECT COUNT(*) FROM tickets WHERE rule = 'AgentOffline' AND opened_at <= ?",
                (until,),
            ).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0])


def _collector_figures(
    args: argparse.Namespace,
    hooks: CollectorHooks,
    coord: Coordinator,
    probe_for: float | None,
    http: str,
) -> dict[str, Any]:
    """The collector's own figures: samples/s, /metrics under load and idle, tickets."""
    out: dict[str, Any] = {}
    scrape_a, scrape_b = hooks.scrapes[0], hooks.scrapes[-1]
    window = scrape_b.started - scrape_a.started
    out["samples_per_second"] = (scrape_b.value(SAMPLES) - scrape_a.value(SAMPLES)) / window
    # Crossings happen in the first interval of the window; give late tickets a moment.
    if probe_for is not None:
        wait_tickets = time.monotonic() + 5
        while time.monotonic() < wait_tickets and len(coord.got.ticket_seen) < len(
            coord.got.crossed
        ):
            coord.poll_tickets(hooks.database, args.probe_rule)
            time.sleep(0.1)
    out["scrape_seconds"] = scrape_b.seconds
    out["scrape_bytes"] = scrape_b.size
    out["scrape_series"] = sum(
        1 for line in scrape_b.text.splitlines() if line and not line.startswith("#")
    )
    if hooks.scraper is not None:
        out.update(hooks.scraper.stats.figures())
    # What saturation did to the store and to liveness (all of them false here: every
    # simulated PC reports steadily through the window).
    out["store_contended"] = scrape_b.value("tripline_collector_store_contended_total")
    out["store_errors"] = scrape_b.value("tripline_collector_store_errors_total")
    out["store_went_unhealthy"] = sum(
        float(line.rsplit(" ", 1)[1])
        for line in scrape_b.text.splitlines()
        if line.startswith("tripline_collector_store_health_changes_total{")
        and 'to="unhealthy"' in line
    )
    window_end = time.time() - (time.monotonic() - scrape_b.started)
    out["offline_tickets"] = offline_tickets(hooks.database, window_end)
    out["ticket_probe_for"] = probe_for
    out["tickets_expected"] = len(coord.got.crossed)
    out["tickets_seen"] = len(coord.got.ticket_seen)
    if probe_for is not None:
        seen = [
            coord.got.ticket_seen[a] - (coord.got.crossed[a] + probe_for)
            for a in coord.got.ticket_seen
        ]
        opened = [
            coord.got.ticket_opened[a] - (coord.got.crossed[a] + probe_for)
            for a in coord.got.ticket_opened
        ]
        out["ticket_latency_p50_s"], _, out["ticket_latency_max_s"] = quantiles(seen)
        out["ticket_opened_p50_s"], _, out["ticket_opened_max_s"] = quantiles(opened)
        out["ticket_window_ok"] = args.duration >= args.interval + probe_for + 2
    if not args.no_compare:
        idle = min((scrape(f"{http}/metrics") for _ in range(2)), key=lambda s: s.seconds)
        out["scrape_idle_seconds"] = idle.seconds
        out["generate_latest_seconds"] = generate_latest_seconds(idle.text)
        out["scrape_speedup"] = out["generate_latest_seconds"] / idle.seconds
        out["promtool"] = promtool_check(idle.text)
    return out


def _line(text: str) -> None:
    print(text, flush=True)


def _fmt(template: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return template.format(value)


def comparison_table(f: dict[str, Any]) -> list[str]:
    """Collector vs bare gRPC, one row per compared figure, with the ratio."""
    rows = [f"{'':28} {'collector':>12} {'bare gRPC':>12} {'ratio':>8}"]
    for name, title, template in COMPARED:
        collector, bare = f.get(_collector_name(name)), f.get(f"bare_{name}")
        ratio = f.get(f"ratio_{name}")
        rows.append(
            f"{title:28} {_fmt(template, collector):>12} {_fmt(template, bare):>12} "
            f"{_fmt('{:.2f}x', ratio):>8}"
        )
    for name, title in (
        ("client_sent", "reports sent in the window"),
        ("client_acked", "  of those acked"),
        ("client_lost", "  lost"),
        ("client_stream_errors", "stream errors"),
    ):
        rows.append(f"{title:28} {f.get(name, '-'):>12} {f.get('bare_' + name, '-'):>12}")
    rows.append(
        f"{'server connections':28} {f.get('collector_connections', '-'):>12} "
        f"{f.get('bare_connections', '-'):>12}"
    )
    rows.append(
        f"{'generators CPU % one core':28} {_fmt('{:.0f}', f.get('generator_cpu_percent')):>12} "
        f"{_fmt('{:.0f}', f.get('bare_generator_cpu_percent')):>12}"
    )
    rows.append(
        f"{'generators % of machine':28} "
        f"{_fmt('{:.0f}', f.get('generator_machine_percent')):>12} "
        f"{_fmt('{:.0f}', f.get('bare_generator_machine_percent')):>12}"
    )
    rows.append(
        f"{'machine busy % one core':28} {_fmt('{:.0f}', f.get('machine_busy_percent')):>12} "
        f"{_fmt('{:.0f}', f.get('bare_machine_busy_percent')):>12}"
    )
    for key, title in (("loadavg_before", "loadavg before"), ("loadavg_after", "loadavg after")):
        rows.append(f"{title:28} {_load(f.get(key)):>12} {_load(f.get('bare_' + key)):>12}")
    return rows


def _load(value: Any) -> str:
    return "-" if not value else f"{value[0]:.2f}"


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
    if "offline_tickets" in f:
        _line(
            f"store: {f['store_contended']:.0f} commits waited out a contended lock, "
            f"{f['store_errors']:.0f} failed, went unhealthy {f['store_went_unhealthy']:.0f} "
            f"times; AgentOffline tickets {f['offline_tickets']} (every PC kept reporting)"
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
    if "bare_reports_per_second" in f:
        _line(
            f"baseline (bare gRPC): {f['bare_reports_per_second']:.1f} reports/s acked, "
            f"ack p50={f['bare_ack_p50_ms']:.1f} p99={f['bare_ack_p99_ms']:.1f} ms, "
            f"CPU {f['bare_cpu_percent']:.1f}% of one core, "
            f"{f['bare_cpu_ms_per_report']:.3f} ms per report, RSS {f['bare_rss_mib']:.0f} MiB"
        )
        _line(
            f"collector / baseline: CPU per report {f['ratio_cpu_ms_per_report']:.2f}x  "
            f"ack p50 {f['ratio_ack_p50_ms']:.2f}x  p99 {f['ratio_ack_p99_ms']:.2f}x  "
            f"RSS {f['ratio_rss_mib']:.2f}x"
        )
    _line(
        f"/metrics scrape: {f['scrape_seconds']:.3f} s, {f['scrape_bytes'] / 1e6:.1f} MB, "
        f"{f['scrape_series']} series (under load)"
    )
    if "scrapes" in f:
        _line(
            f"/metrics every {f['scrape_interval']:g} s in the window: {f['scrapes']} scrapes "
            f"({f['scrapes_gzipped']} gzip), p50={f['scrape_p50_s']:.3f} "
            f"p99={f['scrape_p99_s']:.3f} max={f['scrape_max_s']:.3f} s, "
            f"{f['scrape_wire_bytes'] / 1e6:.1f} MB on the wire for "
            f"{f['scrape_page_bytes'] / 1e6:.1f} MB, errors {len(f['scrape_errors'])}"
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
    load_a, load_b = f["loadavg_before"], f["loadavg_after"]
    _line(
        f"machine: {f['cores']} cores, busy {f['machine_busy_percent']:.0f}% of one core in the "
        f"window (generators {f['generator_cpu_percent']:.0f}% of one core = "
        f"{f['generator_machine_percent']:.0f}% of the machine, collector "
        f"{f.get('collector_cpu_percent', math.nan):.0f}%), "
        f"loadavg before {load_a[0]:.2f} {load_a[1]:.2f} {load_a[2]:.2f}, "
        f"after {load_b[0]:.2f} {load_b[1]:.2f} {load_b[2]:.2f}"
    )
    _line(
        f"shape: {'TLS, certificate verified' if f['tls'] else 'plaintext'}, "
        f"{f['agents_per_channel']} agent(s) per channel, {f['channels']} connections "
        f"(collector saw {f.get('collector_connections', '-')} established), "
        f"open files limit {f['nofile_limit']}, collector workers {f['workers']}"
    )
    if "bare_reports_per_second" in f:
        _line("")
        for row in comparison_table(f):
            _line(row)
    for failure in f["failures"] + f.get("bare_failures", []):
        _line(f"failure: {failure}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _line(
        f"loadgen: {args.agents} agents, {args.procs} generator process(es), interval "
        f"{args.interval:g}s, warmup {args.warmup:g}s, measuring {args.duration:g}s"
        + ("" if args.no_baseline else f" (baseline {args.baseline_duration:g}s)")
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
        and not figures.get("bare_failures")
        and figures.get("collector_exit_code", 0) == 0
        and figures["generators_reported"] == args.procs
        and figures.get("bare_generators_reported", args.procs) == args.procs
        and figures.get("bare_alive_to_the_end", True)
    )
    if figures.get("collector_log_tail"):
        print(figures["collector_log_tail"], file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
