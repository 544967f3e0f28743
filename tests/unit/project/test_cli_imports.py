"""Commands start like a tool: each imports only what it runs.

Each command runs as a real process under ``python -X importtime``, which names every
module the process imported; the test checks what a command must never pull in (the web
server, gRPC, the database where it has none). Not a timer: a slow machine cannot fail
it, an import added at a module's top can. bench/startup.py measures the time itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.importtime import imported, loaded
from tripline.collector.store import Store

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RULES = ROOT / "alerts/src/tripline/alerts/default_rules.yaml"

SERVER = ("starlette", "uvicorn", "grpc", "httpx", "cryptography", "prometheus_client")
COLLECTOR_RUNTIME = (
    "tripline.collector.api",
    "tripline.collector.app",
    "tripline.collector.pipeline",
    "tripline.collector.server",
    "tripline.collector.delivery",
)


def test_rules_check_imports_neither_database_nor_server_nor_collector_config(
    tmp_path: Path,
) -> None:
    modules, result = imported(
        "-m", "tripline.collector.cli", "rules", "check", DEFAULT_RULES, cwd=tmp_path
    )
    assert result.stdout.startswith(f"{DEFAULT_RULES}: OK, ")
    assert "tripline.alerts.rules" in modules
    assert loaded(modules, "sqlalchemy", *SERVER) == []
    # of the collector, only the CLI package itself: no config, store or entropy
    collector = [m for m in loaded(modules, "tripline.collector") if m != "tripline.collector"]
    assert [m for m in collector if not m.startswith("tripline.collector.cli")] == []


def test_tickets_list_imports_the_store_but_not_the_server_nor_the_pipeline(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(f"sqlite:///{data / 'tripline.db'}")
    store.migrate()
    store.close()
    modules, result = imported(
        "-m", "tripline.collector.cli", "tickets", "list", "--data-dir", data, cwd=tmp_path
    )
    assert result.stdout == "no tickets\n"
    assert "sqlalchemy" in modules and "tripline.collector.ticketqueries" in modules
    assert loaded(modules, *SERVER, *COLLECTOR_RUNTIME) == []
    # nor the rule parser or the alert engine: a ticket listing evaluates nothing
    assert loaded(modules, "tripline.alerts.rules", "tripline.alerts.engine") == []
    # nor SQLAlchemy's PostgreSQL dialect (~0.02 s) on a SQLite store
    assert loaded(modules, "sqlalchemy.dialects.postgresql") == []


@pytest.mark.parametrize("as_json", [False, True])
def test_agent_once_imports_no_collector_database_or_grpc(tmp_path: Path, as_json: bool) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    argv = ["-m", "tripline.agent.cli", "--once", "--config", str(config)]
    modules, result = imported(*argv, *(["--json"] if as_json else []), cwd=tmp_path)
    assert result.stdout.strip()
    assert "psutil" in modules and "tripline.agent.probes" in modules
    assert loaded(modules, "tripline.collector", "tripline.alerts", "sqlalchemy") == []
    # the snapshot sends nothing: no transport, runner, spool, scheduler or event loop
    heavy = ("grpc", "apscheduler", "asyncio", "tripline.agent.runner", "tripline.agent.spool")
    assert loaded(modules, *heavy, "tripline.agent.transport") == []
