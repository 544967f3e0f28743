"""The files shipped in deploy/ and how tests read and check them (shared by
tests/unit/project/test_deploy.py, tests/unit/agent/test_service.py and
tests/e2e/test_prometheus.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
RULES = DEPLOY / "tripline.rules.yml"

# What Grafana puts in for the template variables, for checks outside Grafana.
VARIABLES = {"$__rate_interval": "5s", "$__interval": "1s"}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def query_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row, including those nested in collapsed rows."""
    out = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in query_panels(board) for t in p["targets"]]


def substitute(expr: str, values: dict[str, str]) -> str:
    # longest names first: $host must not eat into $hostname-like names
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name.lstrip("$") + "}", values[name])
        expr = expr.replace(name, values[name])
    return expr


def analyze_problems(unit: Path) -> list[str]:
    """What systemd-analyze verify says about the unit (it warns on bad values with rc 0)."""
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    lines = [line for line in result.stderr.splitlines() if unit.name in line]
    if result.returncode != 0:
        lines.append(f"exit {result.returncode}: {result.stderr.strip()}")
    return lines
