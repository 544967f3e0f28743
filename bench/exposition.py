"""/metrics at fleet scale: Tripline's incremental exposition vs prometheus_client.

Builds N agents x ~60 series in a LiveState and measures, in one run:
  - update: rendering one agent's lines when its report arrives (per report, amortised)
  - scrape: SeriesExposition.render() over all agents
  - baseline: a prometheus_client custom collector over the same data + generate_latest
and prints the figures and the speed-up. Usage:

    python -m bench.exposition --agents 10000 [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tripline.collector.exposition import TARGET_LABELS, SeriesExposition, exposed_name
from tripline.collector.state import LiveState
from tripline.common.labels import Labels


def agent_samples(rng: random.Random) -> list[tuple[str, Labels, float]]:
    """About 60 series shaped like a real office PC's report."""
    out: list[tuple[str, Labels, float]] = [("cpu_usage_ratio", (), rng.random() * 0.5)]
    out += [("cpu_core_usage_ratio", (("cpu", str(i)),), rng.random() * 0.6) for i in range(4)]
    out += [(n, (), rng.random() * 4) for n in ("load1", "load5", "load15")]
    for name in ("memory_total_bytes", "memory_available_bytes", "memory_used_bytes"):
        out.append((name, (), float(rng.randrange(2**30, 2**35))))
    out += [
        ("memory_used_ratio", (), 0.3 + rng.random() * 0.5),
        ("swap_used_ratio", (), rng.random() * 0.3),
    ]
    for mount, dev in (("C:\\", "C:\\"), ("D:\\", "D:\\"), ("/", "/dev/sda1")):
        labels = (("device", dev), ("fstype", "NTFS"), ("mountpoint", mount))
        size = float(rng.randrange(2**36, 2**40))
        used = rng.random() * 0.8
        out += [
            ("filesystem_size_bytes", labels, size),
            ("filesystem_free_bytes", labels, size * (1 - used)),
            ("filesystem_avail_bytes", labels, size * (1 - used) * 0.95),
            ("filesystem_used_ratio", labels, used),
            ("filesystem_files", labels, 6.5e6),
            ("filesystem_files_free", labels, 5e6 * (1 - used)),
        ]
    for disk in ("sda", "sdb"):
        for name in (
            "disk_read_bytes_total",
            "disk_written_bytes_total",
            "disk_reads_completed_total",
            "disk_writes_completed_total",
        ):
            out.append((name, (("device", disk),), float(rng.randrange(1, 2**40))))
    for nic in ("eth0", "wlan0"):
        for direction in ("receive", "transmit"):
            for unit in ("bytes", "packets", "errors"):
                name = f"network_{direction}_{unit}_total"
                out.append((name, (("device", nic),), float(rng.randrange(0, 2**40))))
    out += [
        ("boot_time_seconds", (), 1.7e9),
        ("uptime_seconds", (), rng.random() * 1e6),
        ("processes", (), float(rng.randrange(100, 400))),
        ("users_logged_in", (), 1.0),
        ("agent_collect_duration_seconds", (), rng.random() / 100),
    ]
    return out


class BaselineCollector(Collector):
    """The straightforward prometheus_client way: build every family at scrape time."""

    def __init__(self, state: LiveState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for live in self.state.agents.values():
            target = (live.agent_id, live.hostname, live.customer, live.site)
            for name, labels, value in live.latest():
                exposed, kind = exposed_name(name)
                label_names = (*TARGET_LABELS, *(k for k, _ in labels))
                family = families.get(exposed)
                if family is None:
                    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                    family = families[exposed] = cls(exposed, name, labels=label_names)
                family.add_metric((*target, *(v for _, v in labels)), value)  # type: ignore[attr-defined]
        yield from families.values()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = random.Random(42)
    state = LiveState(window=900.0)
    exposition = SeriesExposition(state, lambda live: True)
    now = time.time()
    lives = []
    for i in range(args.agents):
        live = state.ensure(
            f"agt_{i:016x}", customer=f"cust{i % 200}", hostname=f"pc-{i}", site="hq"
        )
        live.last_seen = now
        state.record(live, now, agent_samples(rng))
        lives.append(live)
    series = sum(len(live.current) for live in lives)

    started = time.perf_counter()
    for live in lives:
        exposition.update(live)
    update_cold = time.perf_counter() - started
    for live in lives:  # the next report of every agent: new values, cached prefixes
        state.record(live, now + 10, agent_samples(rng))
    started = time.perf_counter()
    for live in lives:
        exposition.update(live)
    update_total = time.perf_counter() - started

    scrape_times, body = [], b""
    for _ in range(args.repeat):
        started = time.perf_counter()
        body = exposition.render()
        scrape_times.append(time.perf_counter() - started)

    registry = CollectorRegistry()
    registry.register(BaselineCollector(state))
    baseline_times, baseline_body = [], b""
    for _ in range(args.repeat):
        started = time.perf_counter()
        baseline_body = generate_latest(registry)
        baseline_times.append(time.perf_counter() - started)

    scrape = statistics.median(scrape_times)
    baseline = statistics.median(baseline_times)
    print(f"agents                      {args.agents}")
    print(f"series                      {series}")
    print(f"update per report (first)   {update_cold / args.agents * 1e6:.0f} us")
    print(f"update per report           {update_total / args.agents * 1e6:.0f} us")
    print(f"scrape (render)             {scrape * 1000:.0f} ms, {len(body) / 1e6:.1f} MB")
    print(
        f"baseline generate_latest    {baseline * 1000:.0f} ms, {len(baseline_body) / 1e6:.1f} MB"
    )
    print(f"speed-up                    {baseline / scrape:.1f}x")


if __name__ == "__main__":
    main()
