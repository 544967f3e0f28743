"""Debian's Prometheus scrapes a real collector fed by a real agent, with deploy/'s scrape
job and recording rules; every query of deploy/'s Grafana dashboard returns data from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deployfiles import dashboard, panel_queries, substitute
from tests.e2e.conftest import Cluster, Collector, eventually
from tests.prometheus_server import Prometheus, prometheus_binary

pytestmark = pytest.mark.e2e

TOKEN = "tle_e2e_prometheus_q7Iqlrx1dUu6ZwVr7kR7m0JluV7x"
RULE_FILE = """
rules:
  - name: MemoryPresent
    metric: memory_total_bytes
    op: ">"
    threshold: 0
    for: 1s
    severity: warning
    tier: 2
    summary: "{host} has memory (a test rule that trips at once)"
"""
# Grafana's $__rate_interval for a 1s scrape is 4 scrapes; a little more absorbs jitter.
RATE_INTERVAL = "5s"


@pytest.fixture
def prometheus_bin() -> str:
    return prometheus_binary()


@pytest.fixture
def started(
    cluster: Cluster, tmp_path: Path, prometheus_bin: str
) -> Iterator[tuple[Prometheus, Collector]]:
    """A collector (with a rule that opens a ticket), an agent, and Prometheus scraping."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE_FILE)
    collector = cluster.collector(
        "--rules", str(rules), "--customer", f"acme={TOKEN}", "--interval", "1"
    ).start()
    collector.wait_ready()
    cluster.agent(collector, TOKEN, "--site", "head-office").start()
    prom = Prometheus(prometheus_bin, tmp_path, collector.http_port)
    prom.start()
    try:
        yield prom, collector
    finally:
        prom.stop()
        if prom.log_path.exists():
            print(f"--- prometheus log ---\n{prom.log_path.read_text()[-3000:]}")


def the_agent(cluster: Cluster, data_dir: Path) -> dict[str, Any]:
    result = cluster.cli("agents", "list", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    agents = json.loads(result.stdout)
    return dict(agents[0]) if agents else {}


def test_prometheus_scrapes_the_agent_and_every_dashboard_query_has_data(
    cluster: Cluster, started: tuple[Prometheus, Collector]
) -> None:
    prom, collector = started
    agent = eventually(lambda: the_agent(cluster, collector.data_dir), what="agent enrolled")
    agent_id, host = agent["agent_id"], agent["hostname"]

    def up() -> list[dict[str, Any]] | None:
        result = prom.query(f'tripline_agent_up{{agent_id="{agent_id}"}}')
        return result if result and result[0]["value"][1] == "1" else None

    (series,) = eventually(up, 60, "Prometheus sees tripline_agent_up == 1")
    # honor_labels: the collector's target labels arrive untouched
    labels = series["metric"]
    assert (labels["customer"], labels["host"], labels["site"]) == ("acme", host, "head-office")
    assert labels["job"] == "tripline"

    root_fs = eventually(
        lambda: prom.query(
            f'tripline_filesystem_used_ratio{{agent_id="{agent_id}", mountpoint="/"}}'
        ),
        30,
        "the root filesystem's used ratio in Prometheus",
    )
    assert 0 < float(root_fs[0]["value"][1]) <= 1

    # The dashboard's variables, as Grafana would fill them from Prometheus.
    customers = prom.api("/api/v1/label/customer/values", **{"match[]": "tripline_agent_up"})
    assert "acme" in customers
    hosts = prom.api(
        "/api/v1/label/host/values", **{"match[]": 'tripline_agent_up{customer="acme"}'}
    )
    assert host in hosts

    values = {
        "$customer": "acme",
        "$host": host,
        "$__rate_interval": RATE_INTERVAL,
        "$__interval": "1s",
    }
    empty = {
        f"{title} #{i}": substitute(expr, values)
        for i, (title, expr) in enumerate(panel_queries(dashboard()))
    }

    def all_have_data() -> bool:
        for title, expr in list(empty.items()):
            result = prom.query(expr)
            if result:
                assert all(s["metric"].get("customer", "acme") == "acme" for s in result), (
                    title,
                    result,
                )
                del empty[title]
        return not empty

    # rate() needs two scrapes inside its window; the ticket panels need the rule to fire
    try:
        eventually(all_have_data, 60, "data for every panel query")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still empty: {json.dumps(empty, indent=1)}") from None
    open_tickets = prom.query("tier_severity:tripline_tickets_open:max")
    assert open_tickets and sum(float(s["value"][1]) for s in open_tickets) >= 1
