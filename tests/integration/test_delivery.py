"""Ticket events delivered to real receivers on loopback: an HTTP server, an SMTP server
(aiosmtpd) and Debian's Alertmanager. Exact deliveries, through outages and restarts."""

from __future__ import annotations

import asyncio
import email
import hmac
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from collector import tickets
from collector.delivery import Deliverer
from collector.routes import parse_routes
from collector.selfmetrics import CollectorMetrics
from collector.sinks import build_sink, sign
from collector.store import Store
from tests.certs import CertAuthority
from tests.conftest import T0, FakeClock, Receiver, free_port

SECRET = "whsec_test_secret"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'tripline.db'}")
    s.migrate()
    yield s
    s.close()


def enrolled_agent(store: Store, customer: str = "acme") -> str:
    _, token = store.create_enrollment_token(customer, now=T0)
    agent, _ = store.enroll_agent(token, hostname="pc-01", site="hq", inventory={}, now=T0)
    return agent.agent_id


def fire(store: Store, agent_id: str, rule: str, at: float, customer: str = "acme") -> int:
    with store.transaction() as conn:
        change = tickets.on_alert_firing(
            conn,
            customer=customer,
            agent_id=agent_id,
            hostname="pc-01",
            rule=rule,
            labels=(("mountpoint", "C:"),),
            severity="warning",
            tier=1,
            summary=f"pc-01: {rule}",
            runbook="clean up",
            value=0.97,
            threshold=0.9,
            context={"filesystems": [{"mountpoint": "C:", "used_ratio": 0.97}]},
            now=at,
            policy=tickets.TicketPolicy(),
        )
    return change.ticket_id


def clear(store: Store, agent_id: str, rule: str, at: float, customer: str = "acme") -> None:
    with store.transaction() as conn:
        tickets.on_alert_resolved(
            conn,
            customer=customer,
            agent_id=agent_id,
            rule=rule,
            labels=(("mountpoint", "C:"),),
            value=0.5,
            reason="cleared",
            now=at,
        )


def deliverer(store: Store, routes_yaml: list[dict[str, Any]], clock: FakeClock) -> Deliverer:
    routes = parse_routes(routes_yaml)
    return Deliverer(
        store,
        [build_sink(r) for r in routes],
        CollectorMetrics(CollectorRegistry()),
        clock=clock,
        rng=lambda: 0.0,
        backoff_initial=10.0,
        backoff_max=60.0,
    )


async def drain_all(d: Deliverer) -> None:
    for name, state in d.routes.items():
        await d.drain(name, state)


def test_webhook_gets_each_event_once_in_order_signed_through_an_outage(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    route = [{"name": "psa", "webhook": {"url": receiver.url, "secret": SECRET}}]
    agent = enrolled_agent(store)

    async def scenario() -> None:
        d = deliverer(store, route, clock)
        await drain_all(d)  # registers the route: it starts at the present
        ticket = fire(store, agent, "DiskFull", T0 + 10)
        receiver.statuses = [503, 503]  # the receiver is down for two attempts
        await drain_all(d)
        assert receiver.requests == []
        await drain_all(d)  # still inside the backoff: no attempt
        clock.advance(5.0)  # backoff after 1st failure is 10 s * (1/2 + 0): 5 s
        await drain_all(d)
        assert receiver.requests == []  # second 503
        clear(store, agent, "DiskFull", T0 + 20)
        clock.advance(10.0)
        await drain_all(d)
        bodies = receiver.bodies()
        assert [(b["idempotency_key"], b["event"]["kind"]) for b in bodies] == [
            (f"{ticket}-1", "opened"),
            (f"{ticket}-2", "resolved"),
        ]
        for headers, body in receiver.requests:
            assert hmac.compare_digest(headers["x-tripline-signature"], sign(SECRET, body))
            assert headers["x-tripline-idempotency-key"] == json.loads(body)["idempotency_key"]
        assert bodies[0]["ticket"]["customer"] == "acme"
        assert bodies[0]["ticket"]["context"]["filesystems"][0]["mountpoint"] == "C:"
        # a restarted collector (a new Deliverer on the same store) sends nothing again
        again = deliverer(store, route, clock)
        await drain_all(again)
        assert len(receiver.requests) == 2
        # and picks up what came after
        fire(store, agent, "DiskFull", T0 + 30)  # within the reopen window: reopened
        await drain_all(again)
        assert [b["event"]["kind"] for b in receiver.bodies()] == ["opened", "resolved", "reopened"]
        for state in list(d.routes.values()) + list(again.routes.values()):
            await state.sink.close()

    asyncio.run(scenario())


def test_a_refused_event_is_recorded_failed_and_the_next_goes_out(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    route = [{"name": "psa", "webhook": {"url": receiver.url}}]
    agent = enrolled_agent(store)

    async def scenario() -> None:
        d = deliverer(store, route, clock)
        await drain_all(d)
        fire(store, agent, "A", T0 + 1)
        fire(store, agent, "B", T0 + 2)
        receiver.statuses = [400]  # the receiver will never take the first one
        await drain_all(d)
        assert [b["ticket"]["rule"] for b in receiver.bodies()] == ["B"]
        with store.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT status, error FROM deliveries ORDER BY event_id"
            ).fetchall()
        assert [r[0] for r in rows] == ["failed", "delivered"]
        assert "HTTP 400" in rows[0][1]
        await d.routes["psa"].sink.close()

    asyncio.run(scenario())


def test_route_filters_skip_other_customers_and_severities(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    route = [
        {
            "name": "acme-only",
            "webhook": {"url": receiver.url},
            "match": {"customers": ["acme"], "events": ["opened"]},
        }
    ]
    acme = enrolled_agent(store, "acme")
    other = enrolled_agent(store, "globex")

    async def scenario() -> None:
        d = deliverer(store, route, clock)
        await drain_all(d)
        fire(store, acme, "A", T0 + 1)
        fire(store, other, "A", T0 + 1, customer="globex")
        clear(store, acme, "A", T0 + 2)
        await drain_all(d)
        bodies = receiver.bodies()
        assert [(b["ticket"]["customer"], b["event"]["kind"]) for b in bodies] == [
            ("acme", "opened")
        ]
        await d.routes["acme-only"].sink.close()

    asyncio.run(scenario())


def test_email_threads_every_event_of_a_ticket(store: Store, clock: FakeClock) -> None:
    from aiosmtpd.controller import Controller

    received: list[email.message.Message] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        route = [
            {
                "name": "helpdesk",
                "email": {
                    "host": "127.0.0.1",
                    "port": port,
                    "from": "tripline@msp.example",
                    "to": ["helpdesk@msp.example"],
                },
            }
        ]
        agent = enrolled_agent(store)

        async def scenario() -> None:
            d = deliverer(store, route, clock)
            await drain_all(d)
            ticket = fire(store, agent, "DiskFull", T0 + 1)
            with store.transaction() as conn:
                tickets.acknowledge(conn, ticket, actor="alice", now=T0 + 2)
            clear(store, agent, "DiskFull", T0 + 3)
            await drain_all(d)

        asyncio.run(scenario())
    finally:
        controller.stop()
    assert [m["X-Tripline-Event"] for m in received] == ["opened", "acknowledged", "resolved"]
    root = received[0]["Message-ID"]
    assert root.startswith("<tripline-ticket-")
    for later in received[1:]:
        assert later["In-Reply-To"] == root and later["References"] == root
        assert later["Message-ID"] != root
    assert all(m["Subject"].startswith("[Tripline #") for m in received)
    assert "clean up" in received[0].get_payload()


def alertmanager_binary() -> str | None:
    path = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if path is None and os.environ.get("TRIPLINE_REQUIRE_ALERTMANAGER") == "1":
        pytest.fail("Alertmanager is required (TRIPLINE_REQUIRE_ALERTMANAGER=1) but not found")
    return path


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = alertmanager_binary()
    if binary is None:
        pytest.skip("Alertmanager not installed (apt-get install prometheus-alertmanager)")
    port, cluster_port = free_port(), free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: 'null'\n  group_wait: 1h\nreceivers:\n  - name: 'null'\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--cluster.listen-address=127.0.0.1:{cluster_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "alertmanager exited"
            assert time.monotonic() < deadline, "alertmanager not ready within 30s"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_alertmanager_receives_firing_then_resolved(
    store: Store, alertmanager: str, clock: FakeClock
) -> None:
    route = [{"name": "am", "alertmanager": {"url": alertmanager}}]
    agent = enrolled_agent(store)
    clock.now = time.time()  # Alertmanager judges startsAt/endsAt against its own clock

    def active() -> list[dict[str, Any]]:
        alerts = httpx.get(f"{alertmanager}/api/v2/alerts", params={"active": "true"}).json()
        return [a for a in alerts if a["labels"].get("tripline_ticket")]

    async def scenario() -> None:
        d = deliverer(store, route, clock)
        await drain_all(d)
        ticket = fire(store, agent, "DiskFull", clock.now)
        await drain_all(d)
        [alert] = active()
        assert alert["labels"]["alertname"] == "DiskFull"
        assert alert["labels"]["customer"] == "acme"
        assert alert["labels"]["mountpoint"] == "C:"
        assert alert["labels"]["tripline_ticket"] == str(ticket)
        assert alert["annotations"]["summary"] == "pc-01: DiskFull"
        clear(store, agent, "DiskFull", time.time())
        await drain_all(d)
        deadline = time.monotonic() + 10  # resolved once its endsAt is past on AM's clock
        while active() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert active() == []
        await d.routes["am"].sink.close()

    asyncio.run(scenario())


def test_email_over_starttls_logs_in_and_a_wrong_password_fails_for_good(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ca = CertAuthority(tmp_path / "pki")
    server = ca.server("smtp")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(server.cert, server.key)
    received: list[tuple[bool, Any, email.message.Message]] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            message = email.message_from_bytes(envelope.content)
            received.append((session.ssl is not None, session.auth_data, message))
            return "250 OK"

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"tripline",
            b"s3cret",
        )
        return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

    port = free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator,
    )
    controller.start()

    def route(name: str, password: str) -> dict[str, Any]:
        return {
            "name": name,
            "email": {
                "host": "127.0.0.1",
                "port": port,
                "starttls": True,
                "tls_ca": str(ca.path),
                "username": "tripline",
                "password": password,
                "from": "tripline@msp.example",
                "to": ["helpdesk@msp.example"],
            },
        }

    try:
        agent = enrolled_agent(store)

        async def scenario() -> None:
            d = deliverer(store, [route("helpdesk", "s3cret"), route("typo", "wrong")], clock)
            await drain_all(d)
            fire(store, agent, "DiskFull", T0 + 1)
            await drain_all(d)

        asyncio.run(scenario())
    finally:
        controller.stop()
    [(over_tls, login, message)] = received
    assert (over_tls, login) == (True, b"tripline")
    assert message["X-Tripline-Event"] == "opened"
    with store.read() as conn:
        rows = conn.exec_driver_sql("SELECT route, status, error FROM deliveries").fetchall()
    by_route = {r[0]: (r[1], r[2]) for r in rows}
    assert by_route["helpdesk"][0] == "delivered"
    status, error = by_route["typo"]
    assert status == "failed" and "SMTP 535" in error
