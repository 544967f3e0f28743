"""The scale-out shape with real processes: two collectors against one PostgreSQL behind a
switchable TCP proxy (a load balancer in miniature). Both migrate at once at start; an
agent moves from one to the other mid-outage; tickets, seqs and alert clocks hold."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.conftest import postgres_schema
from tests.e2e.conftest import Cluster, Collector, eventually
from tripline.collector.migrations import MIGRATIONS

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

POSTGRES_URL_ENV = "TRIPLINE_TEST_POSTGRES_URL"
TOKEN = "tle_e2e_scale_out_gDEE-QkC54MAZcp-bshuwEU82Rxd"
OFFLINE_AFTER = 4.0

# MemoryPresent trips on any machine (every PC has memory) and stays tripped.
RULES = """
rules:
  - name: MemoryPresent
    metric: memory_total_bytes
    op: ">"
    threshold: 0
    for: 2s
    severity: warning
    tier: 1
    summary: "{host} has {value:.0f} bytes of memory"
  - name: AgentOffline
    builtin: offline
    severity: critical
    tier: 1
    summary: "{host} stopped reporting"
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the PostgreSQL named by TRIPLINE_TEST_POSTGRES_URL."""
    with postgres_schema("tripline_e2e_") as url:
        yield url


class SwitchProxy:
    """A TCP proxy on loopback whose backend can be switched: connections made after
    `switch` go to the new port; open ones are cut, as a load balancer does when a
    backend fails its health check. A connection to a dead backend is closed at once."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def switch(self, backend: int) -> None:
        with self._lock:
            self.backend = backend
            cut, self._open = self._open, []
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.switch(0)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.backend), timeout=2)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open += [client, upstream]
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel, client, upstream:
            for sock in peers:
                sel.register(sock, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    try:
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        if not data:
                            return
                        peers[key.fileobj].sendall(data)  # type: ignore[index]
                    except OSError:
                        return


def applied(engine: Engine) -> list[tuple[str, int, int]]:
    with engine.connect() as conn:
        return [
            (row.agent_id, row.applied_seq, row.reports_applied)
            for row in conn.execute(
                text("SELECT agent_id, applied_seq, reports_applied FROM agent_instances")
            )
        ]


def tickets(cluster: Cluster, url: str, rule: str) -> list[dict[str, Any]]:
    result = cluster.cli("tickets", "list", "--json", "--database-url", url)
    assert result.returncode == 0, result.stderr
    return [t for t in json.loads(result.stdout) if t["rule"] == rule]


def events(cluster: Cluster, url: str, ticket_id: int) -> list[str]:
    result = cluster.cli("tickets", "show", str(ticket_id), "--json", "--database-url", url)
    assert result.returncode == 0, result.stderr
    return [e["kind"] for e in json.loads(result.stdout)["events"]]


def agent_up(collector: Collector, agent_id: str) -> float | None:
    status, body = collector.http_get("/metrics")
    prefix = f'tripline_agent_up{{agent_id="{agent_id}"'
    for line in body.splitlines() if status == 200 else []:
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_agent_moving_between_collectors_mid_outage(
    cluster: Cluster, tmp_path: Path, pg_url: str
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    flags = (
        "--database-url",
        pg_url,
        "--rules",
        str(rules),
        "--customer",
        f"acme={TOKEN}",
        "--interval",
        "1",
        "--offline-after",
        f"{OFFLINE_AFTER:g}",
    )
    # Started together: both migrate the empty schema and register the token at once.
    a = cluster.collector(*flags, data_dir=tmp_path / "a", name="collector-a").start()
    b = cluster.collector(*flags, data_dir=tmp_path / "b", name="collector-b").start()
    a.wait_ready()
    b.wait_ready()
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        versions = [r[0] for r in conn.execute(text("SELECT version FROM schema_migrations"))]
        tokens = conn.scalar(text("SELECT count(*) FROM enrollment_tokens"))
    assert sorted(versions) == [m.version for m in MIGRATIONS]
    assert tokens == 1

    proxy = SwitchProxy(a.grpc_port)
    try:
        # The agent dials the proxy (argparse keeps the last --collector).
        agent = cluster.agent(a, TOKEN, "--collector", proxy.address).start()
        [(agent_id, _, _)] = eventually(lambda: applied(engine), what="first report on A")

        # B restarts while the agent streams to A, so B watches an agent it never hears.
        assert b.stop() == 0
        b = cluster.collector(
            *flags,
            data_dir=tmp_path / "b",
            grpc_port=b.grpc_port,
            http_port=b.http_port,
            name="collector-b2",
        ).start()
        b.wait_ready()
        [ticket] = eventually(
            lambda: [t for t in tickets(cluster, pg_url, "MemoryPresent")],
            what="MemoryPresent ticket opened on A",
        )
        # B learns from the shared store that the agent reports to A: no offline ticket.
        seen_on_a = applied(engine)[0][1]
        eventually(
            lambda: applied(engine)[0][1] >= seen_on_a + OFFLINE_AFTER + 1,
            deadline=OFFLINE_AFTER * 4,
            what="A applying for longer than the offline threshold",
        )
        assert agent_up(b, agent_id) == 1.0
        assert tickets(cluster, pg_url, "AgentOffline") == []

        # A dies mid-stream; the agent spools; B sees the silence and opens the offline ticket.
        a.kill()
        spool = tmp_path / "agent" / "spool.db"

        def spooled() -> int:
            with sqlite3.connect(spool) as conn:
                return int(conn.execute("SELECT count(*) FROM reports").fetchone()[0])

        [offline] = eventually(
            lambda: tickets(cluster, pg_url, "AgentOffline"),
            deadline=OFFLINE_AFTER * 5,
            what="AgentOffline ticket opened by B",
        )
        assert offline["status"] == "open"
        assert spooled() >= 3
        before = applied(engine)[0][1]

        # The load balancer moves the agent to B: the backlog replays there.
        proxy.switch(b.grpc_port)
        eventually(lambda: applied(engine)[0][1] >= before + 5, what="backlog replayed on B")
        eventually(
            lambda: tickets(cluster, pg_url, "AgentOffline")[0]["status"] == "resolved",
            what="AgentOffline resolved by B",
        )
        assert agent.stop() == 0
        # Stopped before the checks below: a stopped agent would go offline again.
        assert b.stop() == 0
    finally:
        proxy.close()

    # Every seq applied once, across both collectors.
    [(_, applied_seq, reports_applied)] = applied(engine)
    assert reports_applied == applied_seq
    with sqlite3.connect(spool) as conn:
        (last_seq,) = conn.execute("SELECT last_seq FROM spool_state").fetchone()
    assert applied_seq >= int(last_seq) - 1  # at most the report in flight at the stop

    # One ticket per problem: the ticket A opened is the one ticket, never reopened.
    [memory] = tickets(cluster, pg_url, "MemoryPresent")
    assert memory["id"] == ticket["id"] and memory["status"] == "open"
    assert events(cluster, pg_url, memory["id"]) == ["opened"]
    [offline] = tickets(cluster, pg_url, "AgentOffline")
    assert events(cluster, pg_url, offline["id"]) == ["opened", "resolved"]
    # The alert clock moved with the agent: B kept A's firing_since, it did not refire.
    with engine.connect() as conn:
        firing_since = conn.scalar(
            text(
                "SELECT firing_since FROM alert_states WHERE rule = 'MemoryPresent' "
                "AND phase = 'firing'"
            )
        )
    assert firing_since == pytest.approx(ticket["opened_at"])
    engine.dispose()
