"""deploy/: the Prometheus config and recording rules pass promtool, the Grafana dashboard
is well formed and every panel query parses, and the shipped service files are what
agent/service.py writes."""

from __future__ import annotations

import plistlib
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deployfiles import (
    DEPLOY,
    RULES,
    VARIABLES,
    analyze_problems,
    dashboard,
    panel_queries,
    query_panels,
    substitute,
)
from tripline.agent import service
from tripline.agent.service import ServiceSpec


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"]}


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


def test_prometheus_config_passes_promtool(promtool: str) -> None:
    result = promtool_run(promtool, "check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_prometheus_config_keeps_the_collectors_labels() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "tripline"]
    assert job["honor_labels"] is True
    assert len(job["static_configs"][0]["targets"]) >= 2, "shows several collectors"
    assert config["rule_files"] == [RULES.name]


def test_recording_rules_pass_promtool(promtool: str) -> None:
    result = promtool_run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(recorded_names())} rules found" in result.stdout


def test_dashboard_panels_have_a_datasource_and_queries() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "customer", "host"} <= set(variables)
    assert variables["datasource"]["query"] == "prometheus"
    assert "$customer" in variables["host"]["query"]["query"], "machines of the chosen customer"
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert len(rows) >= 4, rows
    panels = query_panels(board)
    ids = [p["id"] for p in board["panels"] if p["type"] == "row"] + [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], f"{title}: no targets"
        for target in panel["targets"]:
            assert target["expr"].strip(), title
            assert target["datasource"] == panel["datasource"], title
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), title
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, title


def test_dashboard_covers_fleet_customer_machine_and_tickets() -> None:
    queries = " ".join(expr for _, expr in panel_queries(dashboard()))
    for needle in (
        'customer="$customer", host="$host"',
        'customer="$customer"',
        "tier_severity:tripline_tickets_open:max",
        "tripline_network_receive_bytes_total",
        "tripline_filesystem_used_ratio",
        "tripline_memory_used_ratio",
        "customer:tripline_agents_down:sum",
    ):
        assert needle in queries, needle


def test_dashboard_uses_only_defined_recording_rules() -> None:
    defined = recorded_names()
    for title, expr in panel_queries(dashboard()):
        for name in re.findall(r"\b[a-z_]+:[a-z_:]+[a-z_]\b", expr):
            assert name in defined, f"{title}: {name} is not a recording rule"


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    """Each panel query as a recording rule: promtool parses it as Prometheus would."""
    values = {**VARIABLES, "$customer": "acme", "$host": "pc-1", "$datasource": "x"}
    rules = [
        {"record": f"dashboard_check_{i}", "expr": substitute(expr, values)}
        for i, (_, expr) in enumerate(panel_queries(dashboard()))
    ]
    assert all("$" not in r["expr"] for r in rules), [r["expr"] for r in rules]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool_run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_a_broken_query_fails_the_parse_check(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.rules.yml"
    bad = {"record": "x", "expr": "sum by (customer (tripline_agent_up)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [bad]}]}))
    assert promtool_run(promtool, "check", "rules", str(path)).returncode != 0


def test_shipped_systemd_unit_is_what_install_service_writes() -> None:
    spec = ServiceSpec(Path("/opt/tripline/bin/tripline-agent"), Path("/etc/tripline/agent.yaml"))
    assert (DEPLOY / "tripline-agent.service").read_text() == service.unit_text(spec)


def test_shipped_launchd_plist_is_what_install_service_writes() -> None:
    spec = ServiceSpec(
        Path("/opt/tripline/bin/tripline-agent"),
        Path("/Library/Application Support/Tripline/agent.yaml"),
        state_dir=service.MACOS_STATE_DIR,
    )
    shipped = DEPLOY / f"{service.LAUNCHD_LABEL}.plist"
    assert shipped.read_text() == service.plist_text(spec)
    assert plistlib.loads(shipped.read_bytes())["Label"] == service.LAUNCHD_LABEL


def test_collector_example_config_loads_with_the_docs_security_advice() -> None:
    from tripline.collector.config import load_collector_config

    config = load_collector_config(DEPLOY / "collector.example.yaml", environ={})
    # docs/api.md: the HTTP port is plain HTTP carrying API tokens, keep it on loopback
    assert config.http_listen == "127.0.0.1:7701"
    assert config.listen == "0.0.0.0:7700"  # agents reach gRPC over the network...
    assert config.tls_cert == Path("/etc/tripline/tls/collector.crt")  # ...over TLS only
    assert config.tls_key == Path("/etc/tripline/tls/collector.key")
    assert config.plaintext is False
    assert config.data_dir == Path("/var/lib/tripline")
    assert config.rules == Path("/etc/tripline/rules.yaml")
    assert config.interval == 10.0
    assert config.offline_after == 120.0
    assert config.tickets.reopen_window == 3600.0
    assert config.tickets.escalate_tier1_after == 1800.0
    assert config.tickets.escalate_tier2_after == 7200.0
    assert config.log_format == "json"
    assert list(config.customers) == ["acme"]


def test_agent_example_config_loads_with_concrete_values() -> None:
    from tripline.agent.config import load_agent_config

    config = load_agent_config(DEPLOY / "agent.example.yaml", environ={})
    assert config.collector == "collector.msp.example:7700"
    assert config.state_dir == Path("/var/lib/tripline-agent")
    assert config.site == "head-office"
    assert config.tags == {"role": "workstation"}
    assert config.spool_max_bytes == 64 * 2**20
    assert config.tls_ca == Path("/etc/tripline/tls/ca.crt")
    assert config.plaintext is False


def test_every_example_config_in_deploy_is_checked() -> None:
    """A new example file must get its own test above."""
    assert sorted(p.name for p in DEPLOY.glob("*.example.yaml")) == [
        "agent.example.yaml",
        "collector.example.yaml",
    ]


def unit_settings(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_collector_unit_holds_a_fleets_connections() -> None:
    """One descriptor per agent: the documented fleet (max_streams), the HTTP port's cap
    and the reserve must fit under LimitNOFILE."""
    from tripline.collector.config import CollectorConfig
    from tripline.collector.grpcserver import RESERVED_FILES

    defaults = CollectorConfig()
    limit = int(unit_settings(DEPLOY / "tripline-collector.service")["LimitNOFILE"])
    assert limit >= defaults.max_streams + defaults.http_max_connections + RESERVED_FILES
    assert f"LimitNOFILE={limit}" in (DEPLOY.parent / "docs" / "deployment.md").read_text()


def test_collector_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    import shutil

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    unit = tmp_path / "tripline-collector.service"
    # the shipped path does not exist on a test machine; verify checks the executable
    text = (DEPLOY / "tripline-collector.service").read_text()
    unit.write_text(
        text.replace("/opt/tripline/bin/tripline", service.default_executable().as_posix())
    )
    assert analyze_problems(unit) == []
