"""A CPU ticket names what burns the CPU, with real processes.

A real busy loop (``python -c``) with a secret in its command line burns a core; a real
agent reports to a real collector whose CPU rule fires. The collector asks the agent
for a snapshot while the rule holds, and the ticket shows the busy loop among the top
processes by CPU measured over the short span, its secret redacted on the PC. An
operator then asks the same agent by hand with `tripline agents snapshot` through the
API.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, eventually

pytestmark = pytest.mark.e2e

TOKEN = "tle_snap_" + secrets.token_urlsafe(24)
SECRET = "sk_live_" + secrets.token_hex(12)
MARKER = "tripline-cpu-burner-marker"

# Two cores here: one busy loop alone keeps the machine at least ~half busy. The rule
# holds 2 s (pending first: the snapshot is asked then).
RULES = """
rules:
  - name: CpuBusy
    metric: cpu_usage_ratio
    op: ">"
    threshold: 0.2
    for: 2s
    clear: {threshold: 0.0, for: 1h}
    severity: warning
    tier: 1
    summary: "{host}: CPU at {value:.0%}"
"""


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[bytes]]:
    code = "import sys; print('ready', flush=True)\nwhile True: pass"
    child = subprocess.Popen(
        [sys.executable, "-c", code, MARKER, "--api-token", SECRET], stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def _burning(snapshot: dict[str, Any] | None, pid: int) -> dict[str, Any] | None:
    for process in (snapshot or {}).get("top_cpu", []):
        if process["pid"] == pid:
            return dict(process)
    return None


def test_a_cpu_ticket_names_the_burning_process_with_its_secret_redacted(
    cluster: Cluster, tmp_path: Path, burner: subprocess.Popen[bytes]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    collector = cluster.collector(
        "--rules", str(rules), "--customer", f"acme={TOKEN}", "--interval", "1"
    )
    collector.start()
    collector.wait_ready()
    cluster.agent(collector, TOKEN).start()

    def ticket_with_snapshot() -> dict[str, Any] | None:
        found = [t for t in cluster.tickets(collector.data_dir) if t["rule"] == "CpuBusy"]
        if not found:
            return None
        ticket = cluster.ticket(collector.data_dir, found[0]["id"])
        return ticket if ticket.get("snapshot") else None

    ticket = eventually(ticket_with_snapshot, 60, "CpuBusy ticket with a snapshot")
    process = _burning(ticket["snapshot"], burner.pid)
    assert process is not None, f"the busy loop is among the top CPU: {ticket['snapshot']}"
    # measured over the span: about one core (less on a loaded machine, never nothing)
    assert process["cpu_ratio"] > 0.2
    assert MARKER in process["cmdline"]
    assert "--api-token ***" in process["cmdline"]
    assert 1.0 <= ticket["snapshot"]["cpu_span_seconds"] <= 5.0
    assert ticket["snapshot_taken_at"] is not None
    shown = cluster.cli("tickets", "show", str(ticket["id"]), "--data-dir", str(collector.data_dir))
    assert shown.returncode == 0, shown.stderr
    assert "snapshot taken" in shown.stdout and MARKER in shown.stdout
    assert SECRET not in shown.stdout and SECRET not in json.dumps(ticket)

    # By hand, through the running collector's API.
    created = cluster.cli(
        "api-tokens", "create", "--name", "ops", "--data-dir", str(collector.data_dir)
    )
    assert created.returncode == 0, created.stderr
    api_token = created.stdout.strip().splitlines()[-1]
    env_cli = [
        "--api-url",
        f"http://127.0.0.1:{collector.http_port}",
        "--api-token",
        api_token,
    ]
    agent_id = ticket["agent_id"]
    by_hand = cluster.cli("agents", "snapshot", agent_id, "--json", *env_cli)
    assert by_hand.returncode == 0, by_hand.stderr
    answer = json.loads(by_hand.stdout)
    assert answer["agent_id"] == agent_id
    assert _burning(answer["snapshot"], burner.pid) is not None
    assert SECRET not in by_hand.stdout
    printed = cluster.cli("agents", "snapshot", agent_id, *env_cli)
    assert printed.returncode == 0 and MARKER in printed.stdout
    missing = cluster.cli("agents", "snapshot", "nosuchagent", *env_cli)
    assert missing.returncode != 0 and "404" in missing.stderr
    for path in (collector.data_dir / "tripline.db", collector.log_path):
        assert SECRET.encode() not in path.read_bytes(), f"the secret leaked into {path}"


def test_the_demo_shows_a_ticket_with_a_fresh_snapshot(cluster: Cluster, tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tests.e2e.conftest import Collector

    data_dir = tmp_path / "demo"
    demo = Collector(
        name="demo",
        args=[
            "demo",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--http-listen",
            f"127.0.0.1:{(http_port := free_port())}",
            "--interval",
            "1s",
        ],
        log_path=tmp_path / "demo.log",
        env=cluster.env,
        http_port=http_port,
        data_dir=data_dir,
    )
    cluster.procs.append(demo)
    demo.start()
    demo.wait_ready()

    def demo_ticket() -> dict[str, Any] | None:
        if not (data_dir / "tripline.db").exists():
            return None
        found = [t for t in cluster.tickets(data_dir) if t["rule"] == "DemoPcIsUp"]
        return cluster.ticket(data_dir, found[0]["id"]) if found else None

    # The demo rule holds 15 s: the snapshot asked when it went pending is on the ticket
    # the moment it opens.
    ticket = eventually(demo_ticket, 60, "the demo's DemoPcIsUp ticket")
    assert ticket["snapshot"] is not None, ticket
    assert ticket["snapshot"]["top_memory"], "the demo's agent sends processes"
    assert ticket["snapshot_taken_at"] <= ticket["opened_at"]
    shown = cluster.cli("tickets", "show", str(ticket["id"]), "--data-dir", str(data_dir))
    assert "snapshot taken" in shown.stdout
    assert demo.stop() == 0
