"""The HTTP API on a running collector: real agents over gRPC, real SQLite, httpx.

Two customers, each with a real agent whose reports open a ticket; API tokens scoped to
one customer or to all. A token for acme must never see or change globex's objects,
whatever endpoint it tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import agent_config, running_collector
from tripline.agent.runner import AgentRunner
from tripline.collector import (
    agents_store,
    apitokens,
    enrollment,
    maintenance,
    ticketmodel,
    ticketqueries,
    tickets,
)
from tripline.collector.agents_store import AgentRecord
from tripline.collector.app import CollectorApp
from tripline.collector.cli import main
from tripline.collector.schema import api_tokens
from tripline.collector.store import Store

T0 = 1_700_000_000.0
ENROLLMENT = {
    "acme": "tle_acme_api_PNQPeY0ZJyUFPexTNJgRh8O-ZkY3Rvg3J4d7",
    "globex": "tle_globex_api_gDEE-QkC54MAZcp-bshuwEU82RxdvQ61KHag",
}

RULES = """\
rules:
  - name: MemoryPresent
    metric: memory_total_bytes
    op: ">"
    threshold: 0
    for: 0s
    severity: warning
    tier: 1
    summary: "{host} has memory"
    overrides:
      acme: {threshold: 1}
      globex: {threshold: 2}
  - name: UptimeLong
    metric: uptime_seconds
    op: ">"
    threshold: 0
    for: 1h
    severity: info
    tier: 2
    summary: "{host} is up"
"""


@dataclass
class Fleet:
    app: CollectorApp
    base: str
    data_dir: Path
    agents: dict[str, str]  # customer -> agent id
    tickets: dict[str, int]  # customer -> its MemoryPresent ticket
    secrets: dict[str, str]  # token name -> secret

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[name]}"}

    def ticket(self, ticket_id: int) -> ticketmodel.Ticket:
        with self.app.store.read() as conn:
            return ticketqueries.get_ticket(conn, ticket_id)

    def audit(self) -> list[apitokens.AuditEntry]:
        with self.app.store.read() as conn:
            return apitokens.audit_entries(conn)


@contextlib.asynccontextmanager
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    data_dir = tmp_path / "collector"
    async with running_collector(data_dir, customers=ENROLLMENT, rules=rules) as app:
        stop = asyncio.Event()
        runs = [
            asyncio.create_task(
                AgentRunner(agent_config(tmp_path / customer, app.grpc_port, token)).run(stop)
            )
            for customer, token in ENROLLMENT.items()
        ]
        try:

            def open_tickets() -> dict[str, ticketmodel.Ticket]:
                with app.store.read() as conn:
                    found = ticketqueries.list_tickets(conn, status="open")
                return {t.customer: t for t in found if t.rule == "MemoryPresent"}

            await eventually(lambda: set(open_tickets()) == set(ENROLLMENT))
            secrets = {}
            with app.store.transaction() as conn:
                for name, scope in (("ops-acme", ["acme"]), ("ops-all", None)):
                    _, secrets[name] = apitokens.create_token(
                        conn, name, scope, actor="test", now=app.clock()
                    )
            found = open_tickets()
            yield Fleet(
                app=app,
                base=f"http://127.0.0.1:{app.http_port}/api/v1",
                data_dir=data_dir,
                agents={c: t.agent_id for c, t in found.items()},
                tickets={c: t.id for c, t in found.items()},
                secrets=secrets,
            )
        finally:
            stop.set()
            await asyncio.gather(*runs)


def test_a_token_for_one_customer_never_sees_or_changes_anothers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with fleet(tmp_path) as f, httpx.AsyncClient(base_url=f.base) as http:
            acme = f.auth("ops-acme")
            theirs_ticket = f.tickets["globex"]
            theirs_agent = f.agents["globex"]
            before = f.ticket(theirs_ticket)
            with f.app.store.read() as conn:
                theirs_token = enrollment.list_tokens(conn, "globex")[0].id

            # Lists hold acme's objects only; naming globex is refused.
            listed = (await http.get("/tickets", headers=acme)).json()["items"]
            assert {t["customer"] for t in listed} == {"acme"}
            agents = (await http.get("/agents", headers=acme)).json()["items"]
            assert [a["agent_id"] for a in agents] == [f.agents["acme"]]
            tokens = (await http.get("/enrollment-tokens", headers=acme)).json()["items"]
            assert {t["customer"] for t in tokens} == {"acme"}
            await eventually(lambda: len(f.app.pipeline.alert_states) == 2)
            alerts = (await http.get("/alerts", headers=acme)).json()["items"]
            assert alerts and {a["customer"] for a in alerts} == {"acme"}
            assert {(a["rule"], a["phase"]) for a in alerts} == {
                ("MemoryPresent", "firing"),
                ("UptimeLong", "pending"),
            }
            rules = (await http.get("/rules", headers=acme)).json()["items"]
            memory = next(r for r in rules if r["name"] == "MemoryPresent")
            assert memory["overrides"] == {"acme": {"threshold": 1.0, "enabled": True}}
            for path in ("/tickets", "/agents", "/enrollment-tokens", "/alerts"):
                refused = await http.get(path, params={"customer": "globex"}, headers=acme)
                assert refused.status_code == 403, path
                assert "globex" in refused.json()["error"]

            # globex's objects answer exactly as missing ones do, reads and writes alike.
            missing = await http.get("/tickets/999999", headers=acme)
            hidden = await http.get(f"/tickets/{theirs_ticket}", headers=acme)
            assert (missing.status_code, hidden.status_code) == (404, 404)
            assert hidden.json() == {"error": f"no ticket {theirs_ticket}"}
            writes = [
                (f"/tickets/{theirs_ticket}/ack", {}),
                (f"/tickets/{theirs_ticket}/comment", {"text": "hello"}),
                (f"/tickets/{theirs_ticket}/resolve", {"note": "done"}),
                (f"/tickets/{theirs_ticket}/tier", {"tier": 3}),
                (f"/agents/{theirs_agent}/revoke", {}),
                (f"/enrollment-tokens/{theirs_token}/revoke", {}),
            ]
            for path, body in writes:
                answer = await http.post(path, json=body, headers=acme)
                assert answer.status_code == 404, (path, answer.text)
            assert (await http.get(f"/agents/{theirs_agent}", headers=acme)).status_code == 404
            created = await http.post(
                "/enrollment-tokens", json={"customer": "globex"}, headers=acme
            )
            assert created.status_code == 403

            # Nothing of globex changed, and no write was recorded.
            assert f.ticket(theirs_ticket) == before
            with f.app.store.read() as conn:
                assert agents_store.get_agent(conn, theirs_agent).revoked_at is None
                globex_tokens = enrollment.list_tokens(conn, "globex")
            assert [t.revoked_at for t in globex_tokens] == [None]
            assert [e.action for e in f.audit()] == ["api_token.create"] * 2

            # The all-customers token sees both.
            everyone = f.auth("ops-all")
            listed = (await http.get("/tickets", headers=everyone)).json()["items"]
            assert {t["customer"] for t in listed} == {"acme", "globex"}
            shown = await http.get(f"/tickets/{theirs_ticket}", headers=everyone)
            assert shown.json()["customer"] == "globex"

    asyncio.run(scenario())


def test_ticket_lifecycle_through_the_api_records_the_actor(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with fleet(tmp_path) as f, httpx.AsyncClient(base_url=f.base) as http:
            acme = f.auth("ops-acme")
            tid = f.tickets["acme"]
            path = f"/tickets/{tid}"
            shown = (await http.get(path, headers=acme)).json()
            assert shown["status"] == "open"
            assert [e["kind"] for e in shown["events"]] == ["opened"]
            assert shown["context"]["memory_used_ratio"] is not None

            acked = await http.post(f"{path}/ack", headers=acme)
            assert acked.status_code == 200
            assert acked.json()["acknowledged_by"] == "ops-acme"
            again = await http.post(f"{path}/ack", headers=acme)
            assert again.status_code == 409
            assert "already acknowledged by ops-acme" in again.json()["error"]
            await http.post(f"{path}/comment", json={"text": "rebooting it"}, headers=acme)
            moved = (await http.post(f"{path}/tier", json={"tier": 3}, headers=acme)).json()
            assert moved["tier"] == 3
            same = await http.post(f"{path}/tier", json={"tier": 3}, headers=acme)
            assert same.status_code == 409
            resolved = await http.post(f"{path}/resolve", json={"note": "fixed"}, headers=acme)
            assert resolved.json()["status"] == "resolved"
            assert resolved.json()["resolved_by"] == "ops-acme"

            events = (await http.get(path, headers=acme)).json()["events"]
            assert [(e["kind"], e["actor"]) for e in events] == [
                ("opened", "tripline"),
                ("acknowledged", "ops-acme"),
                ("commented", "ops-acme"),
                ("escalated", "ops-acme"),
                ("resolved", "ops-acme"),
            ]
            assert events[2]["message"] == "rebooting it"
            assert events[3]["data"] == {"from_tier": 1, "to_tier": 3, "manual": True}
            assert events[4]["message"] == "fixed"

            # Agents: the detail carries live values and the inventory.
            agent = (await http.get(f"/agents/{f.agents['acme']}", headers=acme)).json()
            assert agent["up"] is True
            assert agent["inventory"]["hostname"]
            values = {v["metric"] for v in agent["values"]}
            assert {"memory_total_bytes", "uptime_seconds"} <= values

            # A new enrollment token's secret enrolls an agent; then both are revoked.
            created = await http.post(
                "/enrollment-tokens", json={"customer": "acme", "expires_in": 3600}, headers=acme
            )
            assert created.status_code == 201
            new = created.json()
            assert new["expires_at"] == pytest.approx(new["created_at"] + 3600)
            with f.app.store.transaction() as conn:
                third, _ = enrollment.enroll_agent(
                    conn, new["token"], hostname="pc-3", site="", inventory={}, now=f.app.clock()
                )
            revoked = await http.post(f"/enrollment-tokens/{new['id']}/revoke", headers=acme)
            assert revoked.json()["revoked_at"] is not None
            gone = await http.post(f"/agents/{third.agent_id}/revoke", headers=acme)
            assert gone.json()["revoked_at"] is not None

            audit = [e for e in f.audit() if e.action != "api_token.create"]
            assert [(e.action, e.actor, e.customer, e.target) for e in audit] == [
                ("ticket.acknowledge", "ops-acme", "acme", f"ticket/{tid}"),
                ("ticket.comment", "ops-acme", "acme", f"ticket/{tid}"),
                ("ticket.tier", "ops-acme", "acme", f"ticket/{tid}"),
                ("ticket.resolve", "ops-acme", "acme", f"ticket/{tid}"),
                ("enrollment_token.create", "ops-acme", "acme", f"enrollment_token/{new['id']}"),
                ("enrollment_token.revoke", "ops-acme", "acme", f"enrollment_token/{new['id']}"),
                ("agent.revoke", "ops-acme", "acme", f"agent/{third.agent_id}"),
            ]
            assert "token" not in str([e.data for e in audit])

    asyncio.run(scenario())


def test_requests_without_a_valid_token_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with fleet(tmp_path) as f, httpx.AsyncClient(base_url=f.base) as http:
            with f.app.store.transaction() as conn:
                token, secret = apitokens.create_token(
                    conn, "leaver", None, actor="test", now=f.app.clock()
                )
            assert (await http.get("/tickets", headers=f.auth("ops-all"))).status_code == 200
            assert (
                await http.get("/tickets", headers={"Authorization": f"Bearer {secret}"})
            ).is_success
            with f.app.store.transaction() as conn:
                apitokens.revoke_token(conn, token.id, actor="test", now=f.app.clock())
            for headers in (
                {},
                {"Authorization": f"Basic {secret}"},
                {"Authorization": "Bearer tla_not-a-token"},
                {"Authorization": f"Bearer {secret}"},
            ):
                answer = await http.post(f"/tickets/{f.tickets['acme']}/ack", headers=headers)
                assert answer.status_code == 401, headers
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert answer.json()["error"]
            assert f.ticket(f.tickets["acme"]).status == "open"
            # the document describing the API needs no token
            document = (await http.get("/openapi.json")).json()
            assert "/tickets/{ticket_id}/tier" in document["paths"]

    asyncio.run(scenario())


BAD_INPUT = [
    ("GET", "/tickets", {"limit": "0"}, None, "limit must be a whole number from 1 to 1000"),
    ("GET", "/tickets", {"status": "closed"}, None, "status must be one of open"),
    ("GET", "/tickets", {"tier": "4"}, None, "tier must be a whole number from 1 to 3"),
    ("GET", "/tickets", {"sort": "id"}, None, "unknown query parameter 'sort'"),
    ("GET", "/tickets/abc", {}, None, "ticket id must be a whole number"),
    ("GET", "/alerts", {"phase": "done"}, None, "phase must be one of pending, firing"),
    ("POST", "/tickets/{acme}/comment", {}, {"text": "  "}, "field 'text' needs some text"),
    ("POST", "/tickets/{acme}/comment", {}, {}, "missing required fields ['text']"),
    ("POST", "/tickets/{acme}/comment", {}, [1], "must be a JSON object"),
    ("POST", "/tickets/{acme}/tier", {}, {"tier": 4}, "'tier' must be a whole number"),
    ("POST", "/tickets/{acme}/tier", {}, {"tier": True}, "'tier' must be a whole number"),
    ("POST", "/tickets/{acme}/ack", {}, {"by": "me"}, "unknown fields ['by']"),
    ("POST", "/enrollment-tokens", {}, {"customer": " acme"}, "without surrounding spaces"),
    ("POST", "/enrollment-tokens", {}, {"customer": "a\x00"}, "must not contain NUL"),
]


def test_bad_input_gets_a_4xx_a_person_can_act_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with fleet(tmp_path) as f, httpx.AsyncClient(base_url=f.base) as http:
            auth = f.auth("ops-all")
            for method, path, params, body, message in BAD_INPUT:
                url = path.replace("{acme}", str(f.tickets["acme"]))
                answer = await http.request(method, url, params=params, json=body, headers=auth)
                assert answer.status_code == 400, (path, params, body, answer.text)
                assert message in answer.json()["error"], (path, answer.json())
            huge = await http.post(
                f"/tickets/{f.tickets['acme']}/comment", content=b" " * 300_000, headers=auth
            )
            assert huge.status_code == 413
            wrong = await http.delete("/tickets", headers=auth)
            assert wrong.status_code == 405 and "error" in wrong.json()
            assert (await http.get("/nothing", headers=auth)).json()["error"].startswith("no such")
            assert f.ticket(f.tickets["acme"]).events[-1].kind == "opened"

            # Paging: one ticket a page, then the next, then none.
            first = (await http.get("/tickets", params={"limit": 1}, headers=auth)).json()
            assert len(first["items"]) == 1 and first["next_offset"] == 1
            second = (
                await http.get("/tickets", params={"limit": 1, "offset": 1}, headers=auth)
            ).json()
            assert second["next_offset"] is None
            assert {first["items"][0]["id"], second["items"][0]["id"]} == set(f.tickets.values())

    asyncio.run(scenario())


def _cli(*argv: str) -> int:
    return main(list(argv))


def test_tickets_cli_works_against_the_running_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with fleet(tmp_path) as f:
            base = f"http://127.0.0.1:{f.app.http_port}"
            # A token made with the CLI against the collector's data dir, while it runs.
            code = await asyncio.to_thread(
                _cli, "api-tokens", "create", "--name", "cli-ops", "--customer", "acme",
                "--data-dir", str(f.data_dir),
            )  # fmt: skip
            assert code == 0
            secret = capsys.readouterr().out.strip().splitlines()[-1]
            monkeypatch.setenv("TRIPLINE_API_TOKEN", secret)

            assert (
                await asyncio.to_thread(_cli, "tickets", "list", "--api-url", base, "--json") == 0
            )
            listed = _json(capsys.readouterr().out)
            assert [t["id"] for t in listed] == [f.tickets["acme"]]

            tid = str(f.tickets["acme"])
            for argv in (
                ("ack", tid),
                ("comment", tid, "called the customer"),
                ("resolve", tid, "--note", "disk cleaned"),
            ):
                assert await asyncio.to_thread(_cli, "tickets", *argv, "--api-url", base) == 0
            out = capsys.readouterr().out
            assert f"Ticket #{tid}  [resolved]" in out
            assert "by cli-ops  called the customer" in out

            shown = f.ticket(f.tickets["acme"])
            assert [(e.kind, e.actor) for e in shown.events[1:]] == [
                ("acknowledged", "cli-ops"),
                ("commented", "cli-ops"),
                ("resolved", "cli-ops"),
            ]
            # globex's ticket is out of this token's reach from the CLI too
            theirs = str(f.tickets["globex"])
            code = await asyncio.to_thread(_cli, "tickets", "ack", theirs, "--api-url", base)
            assert code == 2
            assert f"404: no ticket {theirs}" in capsys.readouterr().err

            monkeypatch.setenv("TRIPLINE_API_TOKEN", "tla_unknownJ6OEo1nRRczPVK2v5Zeh28ZUcZGYC6Bas")
            code = await asyncio.to_thread(_cli, "tickets", "list", "--api-url", base)
            assert code == 2
            assert "401: the API token is unknown or revoked" in capsys.readouterr().err

            # Listing and revoking tokens through the data dir.
            code = await asyncio.to_thread(
                _cli, "api-tokens", "list", "--json", "--data-dir", str(f.data_dir)
            )
            tokens = {t["name"]: t for t in _json(capsys.readouterr().out)}
            assert tokens["cli-ops"]["customers"] == ["acme"]
            assert tokens["ops-all"]["customers"] is None
            code = await asyncio.to_thread(
                _cli, "api-tokens", "revoke", str(tokens["cli-ops"]["id"]),
                "--data-dir", str(f.data_dir),
            )  # fmt: skip
            assert code == 0
            monkeypatch.setenv("TRIPLINE_API_TOKEN", secret)
            assert await asyncio.to_thread(_cli, "tickets", "list", "--api-url", base) == 2
            assert "401" in capsys.readouterr().err
            actions = [(e.action, e.actor) for e in f.audit() if e.action.startswith("api_token")]
            assert actions[-2:] == [("api_token.create", _login()), ("api_token.revoke", _login())]

    asyncio.run(scenario())


def _json(text: str) -> Any:
    import json

    return json.loads(text)


def _login() -> str:
    import getpass

    return getpass.getuser()


def test_api_tokens_are_stored_hashed_scoped_and_audited(store: Store) -> None:
    """On every store backend (SQLite; PostgreSQL when the run has one)."""
    with store.transaction() as conn:
        scoped, secret = apitokens.create_token(
            conn, "ops", ["globex", "acme", "acme"], actor="alice", now=T0
        )
        everyone, other = apitokens.create_token(conn, "all", None, actor="alice", now=T0)
    assert scoped.customers == ("acme", "globex") and everyone.customers is None
    assert secret.startswith("tla_") and len(secret) > 40
    with store.read() as conn:
        stored = conn.execute(select(api_tokens.c.token_hash)).scalars().all()
        assert secret not in str(stored) and hashlib.sha256(secret.encode()).hexdigest() in stored
        assert apitokens.authenticate(conn, secret) == scoped
        assert apitokens.authenticate(conn, other) == everyone
        assert apitokens.authenticate(conn, secret + "x") is None
        assert apitokens.authenticate(conn, "") is None
    assert scoped.allows("acme") and not scoped.allows("initech") and everyone.allows("initech")

    with store.transaction() as conn, pytest.raises(apitokens.ApiTokenNameTaken):
        apitokens.create_token(conn, "ops", None, actor="alice", now=T0)
    for bad in ([], [" acme"], ["a\nb"]):
        with store.transaction() as conn, pytest.raises(ValueError):
            apitokens.create_token(conn, "x", bad, actor="alice", now=T0)
    with store.transaction() as conn:
        apitokens.revoke_token(conn, scoped.id, actor="bob", now=T0 + 1)
        again = apitokens.revoke_token(conn, scoped.id, actor="bob", now=T0 + 2)
        assert again.revoked_at == T0 + 1
        with pytest.raises(apitokens.ApiTokenNotFound):
            apitokens.revoke_token(conn, 999, actor="bob", now=T0)
    with store.read() as conn:
        assert apitokens.authenticate(conn, secret) is None
        entries = apitokens.audit_entries(conn)
    assert [(e.action, e.actor, e.target) for e in entries] == [
        ("api_token.create", "alice", f"api_token/{scoped.id}"),
        ("api_token.create", "alice", f"api_token/{everyone.id}"),
        ("api_token.revoke", "bob", f"api_token/{scoped.id}"),
    ]
    assert entries[0].data == {"name": "ops", "customers": ["acme", "globex"]}


def test_ticket_filters_and_manual_tier_change(store: Store, agent: AgentRecord) -> None:
    """list_tickets' scope and filters, and reassign_tier, on every store backend."""
    policy = ticketmodel.TicketPolicy()
    ids = {}
    with store.transaction() as conn:
        for customer, severity, tier in (("acme", "warning", 1), ("globex", "critical", 2)):
            ids[customer] = tickets.on_alert_firing(
                conn, customer=customer, agent_id=agent.agent_id, hostname="pc-01",
                rule="R", labels=(), severity=severity, tier=tier, summary="s", runbook=None,
                value=1.0, threshold=0.5, context={}, now=T0, policy=policy,
            ).ticket_id  # fmt: skip
    with store.read() as conn:

        def found(**filters: Any) -> set[int]:
            return {t.id for t in ticketqueries.list_tickets(conn, **filters)}

        assert found(customers=["acme"]) == {ids["acme"]}
        assert found(customers=[]) == set()
        assert found(customers=["acme"], customer="globex") == set()
        assert found(severity="critical") == {ids["globex"]}
        assert found(tier=1) == {ids["acme"]}
    with store.transaction() as conn:
        moved = tickets.reassign_tier(conn, ids["acme"], tier=3, actor="ops", now=T0 + 5)
        assert (moved.tier, moved.tier_since) == (3, T0 + 5)
        assert moved.events[-1].data == {"from_tier": 1, "to_tier": 3, "manual": True}
        with pytest.raises(ticketmodel.InvalidTicketTransition, match="it is at tier 3"):
            tickets.reassign_tier(conn, ids["acme"], tier=3, actor="ops", now=T0 + 6)
        tickets.resolve(conn, ids["acme"], actor="ops", now=T0 + 7)
        with pytest.raises(ticketmodel.InvalidTicketTransition, match="it is resolved"):
            tickets.reassign_tier(conn, ids["acme"], tier=2, actor="ops", now=T0 + 8)
        with pytest.raises(ticketmodel.TicketNotFound):
            tickets.reassign_tier(conn, 999, tier=2, actor="ops", now=T0)


def _window_actions(f: Fleet) -> list[tuple[str, str, str | None, str]]:
    return [
        (e.action, e.actor, e.customer, e.target)
        for e in f.audit()
        if e.action.startswith("maintenance_window.")
    ]


def test_maintenance_windows_are_scoped_validated_and_audited(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with fleet(tmp_path) as f, httpx.AsyncClient(base_url=f.base) as http:
            acme, everyone = f.auth("ops-acme"), f.auth("ops-all")
            now = f.app.clock()
            created = await http.post(
                "/maintenance-windows",
                headers=acme,
                json={
                    "customer": "acme",
                    "site": "hq",
                    "weekly": "Sat-Sun 00:00-24:00",
                    "timezone": "Europe/Berlin",
                    "comment": "weekend patching",
                },
            )
            assert created.status_code == 201, created.text
            ours = created.json()
            assert (ours["kind"], ours["created_by"], ours["site"]) == ("weekly", "ops-acme", "hq")
            assert ours["status"] in ("active", "scheduled")
            theirs = (
                await http.post(
                    "/maintenance-windows",
                    headers=everyone,
                    json={"customer": "globex", "starts_at": now, "ends_at": now + 3600},
                )
            ).json()
            assert (theirs["kind"], theirs["status"]) == ("once", "active")
            fleetwide = await http.post(
                "/maintenance-windows",
                headers=everyone,
                json={"rule": "UptimeLong", "weekly": "Sun"},
            )
            assert fleetwide.status_code == 201, fleetwide.text

            # acme's token sees and changes acme's windows only.
            listed = (await http.get("/maintenance-windows", headers=acme)).json()["items"]
            assert [w["id"] for w in listed] == [ours["id"]]
            everything = (await http.get("/maintenance-windows", headers=everyone)).json()
            assert len(everything["items"]) == 3
            for other in (theirs["id"], fleetwide.json()["id"]):
                path = f"/maintenance-windows/{other}"
                assert (await http.get(path, headers=acme)).status_code == 404
                assert (
                    await http.put(path, headers=acme, json={"comment": "x"})
                ).status_code == 404
                assert (await http.delete(path, headers=acme)).status_code == 404
            for refused in (
                {"customer": "globex", "weekly": "Sun"},
                {"rule": "UptimeLong", "weekly": "Sun"},  # no customer: spans customers
            ):
                answer = await http.post("/maintenance-windows", headers=acme, json=refused)
                assert answer.status_code == 403, answer.text
            mine = f"/maintenance-windows/{ours['id']}"
            for moved in ({"customer": "globex"}, {"customer": None}):
                assert (await http.put(mine, headers=acme, json=moved)).status_code == 403
            for query in ("customer=globex", ""):
                answer = await http.get(f"/suppressed-alerts?{query}", headers=acme)
                assert answer.status_code == (403 if query else 200)
            assert (
                await http.get("/maintenance-windows?customer=globex", headers=acme)
            ).status_code == 403

            # Bad input: 400 naming the field; nothing stored.
            for body, field in (
                ({"customer": "acme", "weekly": "Funday 10:00-11:00"}, "weekly"),
                ({"customer": "acme", "starts_at": "soon", "ends_at": now}, "starts_at"),
                ({"customer": "acme", "starts_at": now, "ends_at": now - 1}, "ends_at"),
                ({"customer": "acme", "weekly": "Sun", "timezone": "Mars/Base"}, "timezone"),
                ({"customer": "acme", "cron": "0 2 * * Sun"}, "duration"),
                ({"customer": "acme", "cron": "0 25 * * *", "duration": 60}, "cron"),
                ({"customer": "acme"}, "schedule"),
                ({"customer": "  ", "weekly": "Sun"}, "customer"),
                ({"customer": "acme", "weekly": "Sun", "when": 1}, "when"),
            ):
                answer = await http.post("/maintenance-windows", headers=everyone, json=body)
                assert answer.status_code == 400, (body, answer.text)
                assert field in answer.json()["error"], (body, answer.text)

            changed = await http.put(
                mine, headers=acme, json={"cron": "0 2 * * Sun", "duration": 7200}
            )
            assert changed.status_code == 200, changed.text
            assert (changed.json()["kind"], changed.json()["weekly"]) == ("cron", None)
            assert changed.json()["comment"] == "weekend patching"
            assert (await http.get(mine, headers=acme)).json()["cron"] == "0 2 * * Sun"
            assert (await http.delete(mine, headers=acme)).json()["id"] == ours["id"]
            assert (await http.get(mine, headers=acme)).status_code == 404

            with f.app.store.read() as conn:
                kept = maintenance.get_window(conn, theirs["id"])
            assert (kept.customer, kept.comment) == ("globex", "")
            assert _window_actions(f) == [
                (
                    "maintenance_window.create",
                    "ops-acme",
                    "acme",
                    f"maintenance_window/{ours['id']}",
                ),
                (
                    "maintenance_window.create",
                    "ops-all",
                    "globex",
                    f"maintenance_window/{theirs['id']}",
                ),
                (
                    "maintenance_window.create",
                    "ops-all",
                    None,
                    f"maintenance_window/{fleetwide.json()['id']}",
                ),
                (
                    "maintenance_window.update",
                    "ops-acme",
                    "acme",
                    f"maintenance_window/{ours['id']}",
                ),
                (
                    "maintenance_window.delete",
                    "ops-acme",
                    "acme",
                    f"maintenance_window/{ours['id']}",
                ),
            ]
            update = next(e for e in f.audit() if e.action == "maintenance_window.update")
            assert update.data == {"cron": "0 2 * * Sun", "duration": 7200.0}

    asyncio.run(scenario())


def test_a_window_created_through_the_api_suppresses_until_deleted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with fleet(tmp_path) as f, httpx.AsyncClient(base_url=f.base) as http:
            acme = f.auth("ops-acme")
            now = f.app.clock()
            created = await http.post(
                "/maintenance-windows",
                headers=acme,
                json={
                    "customer": "acme",
                    "rule": "MemoryPresent",
                    "starts_at": now - 60,
                    "ends_at": now + 3600,
                },
            )
            assert created.status_code == 201, created.text
            window_id = created.json()["id"]
            # The API write takes effect at the collector's next tick.
            await eventually(lambda: any(w.id == window_id for w in f.app.pipeline.windows.windows))
            # A new acme machine comes up while the window is on: its alert fires, is
            # held back and opens no ticket.
            stop = asyncio.Event()
            run = asyncio.create_task(
                AgentRunner(
                    agent_config(tmp_path / "acme-2", f.app.grpc_port, ENROLLMENT["acme"])
                ).run(stop)
            )
            try:

                async def held() -> list[dict[str, Any]]:
                    answer = await http.get(
                        f"/suppressed-alerts?window_id={window_id}", headers=acme
                    )
                    return answer.json()["items"]

                await eventually(held)
                [alert] = await held()
                new_agent = alert["agent_id"]
                assert new_agent not in f.agents.values()
                assert (alert["customer"], alert["rule"], alert["released_at"]) == (
                    "acme",
                    "MemoryPresent",
                    None,
                )

                def tickets_of(agent_id: str) -> list[ticketmodel.Ticket]:
                    with f.app.store.read() as conn:
                        return ticketqueries.list_tickets(conn, agent_id=agent_id)

                assert tickets_of(new_agent) == []
                globex = f.auth("ops-all")
                assert [a["agent_id"] for a in await held()] == [new_agent]
                theirs = await http.get("/suppressed-alerts?customer=globex", headers=globex)
                assert theirs.json()["items"] == []

                # Deleting the window releases the alert at the next tick.
                deleted = await http.delete(f"/maintenance-windows/{window_id}", headers=acme)
                assert deleted.status_code == 200
                await eventually(lambda: len(tickets_of(new_agent)) == 1)
                [released] = await held()
                assert released["ticket_id"] == tickets_of(new_agent)[0].id
            finally:
                stop.set()
                await run

    asyncio.run(scenario())
