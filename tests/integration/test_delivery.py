"""Ticket events delivered to real receivers on loopback: an HTTP server, an SMTP server
(aiosmtpd) and Debian's Alertmanager. Exact deliveries, through outages and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import hmac
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bench.tlsfiles import CertAuthority
from tests.conftest import T0, FakeClock, Receiver, async_eventually, free_port
from tests.integration.delivery_helpers import clear, enrolled_agent, fire
from tripline.collector import tickets
from tripline.collector.delivery import Deliverer
from tripline.collector.delivery_parking import get_parked, list_parked, unpark
from tripline.collector.routes import Route, parse_routes
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.sinks import (
    Delivery,
    Sink,
    WebhookSink,
    alertmanager_alert,
    build_sink,
    email_message,
    sign,
)
from tripline.collector.store import Store

SECRET = "whsec_test_secret"


@pytest.fixture
def store(sqlite_store: Store) -> Store:
    """Delivery is the same on every backend (the outbox is covered by the contract
    tests): one SQLite file."""
    return sqlite_store


def deliverer(
    store: Store,
    routes_yaml: list[dict[str, Any]],
    clock: FakeClock,
    sinks: list[Sink] | None = None,
    **options: Any,
) -> Deliverer:
    routes = parse_routes(routes_yaml)
    return Deliverer(
        store,
        [build_sink(r) for r in routes] + (sinks or []),
        CollectorMetrics(CollectorRegistry()),
        clock=clock,
        rng=lambda: 0.0,
        **{"backoff_initial": 10.0, "backoff_max": 60.0, **options},
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


# -- isolation: one event never stops a route, one route never stops another -------------


@dataclass
class Hook:
    """A webhook receiver on loopback whose answer depends on the request: ``answer``
    maps (path, idempotency key) to (status, extra headers); 2xx requests are kept."""

    port: int
    answer: Callable[[str, str], tuple[int, dict[str, str]]] = lambda path, key: (204, {})
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    hits: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def sent_keys(self) -> list[str]:
        return [body["idempotency_key"] for _, body in self.accepted]


@pytest.fixture
def hook() -> Iterator[Hook]:
    rec = Hook(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            rec.hits += 1
            status, headers = rec.answer(self.path, self.headers["x-tripline-idempotency-key"])
            if status < 300:
                rec.accepted.append((self.path, json.loads(body)))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", rec.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[email.message.Message]]]:
    from aiosmtpd.controller import Controller

    received: list[email.message.Message] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


def mail_route(port: int, name: str = "helpdesk") -> dict[str, Any]:
    return {
        "name": name,
        "email": {
            "host": "127.0.0.1",
            "port": port,
            "from": "tripline@msp.example",
            "to": ["helpdesk@msp.example"],
        },
    }


def mail_keys(received: list[email.message.Message]) -> list[str]:
    return [str(m["X-Tripline-Idempotency-Key"]) for m in received]


def per_ticket(keys: list[str]) -> dict[str, list[int]]:
    """Event seqs each ticket's events arrived in."""
    seen: dict[str, list[int]] = {}
    for key in keys:
        ticket, _, seq = key.partition("-")
        seen.setdefault(ticket, []).append(int(seq))
    return seen


class RaisingWebhook(WebhookSink):
    """The real webhook sink with a bug on one chosen event: it raises before sending."""

    def __init__(self, route: Route, bad_key: str) -> None:
        super().__init__(route)
        self.bad_key = bad_key

    async def deliver(self, delivery: Delivery) -> None:
        if delivery.idempotency_key == self.bad_key:
            raise RuntimeError(f"cannot render {self.bad_key}")
        await super().deliver(delivery)


def test_one_failing_event_is_parked_and_every_other_event_of_every_route_arrives(
    store: Store,
    hook: Hook,
    receiver: Receiver,
    smtp: tuple[int, list[email.message.Message]],
    clock: FakeClock,
) -> None:
    smtp_port, mails = smtp
    agent = enrolled_agent(store)
    [raising_route] = parse_routes([{"name": "buggy", "webhook": {"url": receiver.url}}])

    async def scenario() -> None:
        opened = [fire(store, agent, rule, T0 + i) for i, rule in enumerate("ABC")]
        bad = f"{opened[1]}-1"  # B's opened event
        hook.answer = lambda path, key: (500, {}) if key == bad else (204, {})
        d = deliverer(
            store,
            [{"name": "psa", "webhook": {"url": hook.url}}, mail_route(smtp_port)],
            clock,
            sinks=[RaisingWebhook(raising_route, bad)],
            max_attempts=3,
        )
        for route in d.routes:  # the routes exist from before these events
            with store.transaction() as conn:
                conn.exec_driver_sql("INSERT INTO delivery_routes VALUES (?, 0, ?)", (route, T0))
        for rule in "ABC":
            clear(store, agent, rule, T0 + 10)
        for _ in range(10):  # long enough for three tries with backoff
            await drain_all(d)
            clock.advance(60.0)
        everything = {f"{t}-{seq}" for t in opened for seq in (1, 2)}
        for route, keys in (
            ("psa", hook.sent_keys()),
            ("helpdesk", mail_keys(mails)),
            ("buggy", [b["idempotency_key"] for b in receiver.bodies()]),
        ):
            expected = everything - ({bad} if route != "helpdesk" else set())
            assert sorted(keys) == sorted(expected), route
            assert all(seqs == sorted(seqs) for seqs in per_ticket(keys).values()), route
        # B's resolve went out after its parked open: a receiver learns it is over
        assert f"{opened[1]}-2" in hook.sent_keys()
        with store.read() as conn:
            parked = {(p.route, p.idempotency_key, p.attempts) for p in list_parked(conn)}
            assert parked == {("psa", bad, 3), ("buggy", bad, 3)}
            assert "HTTP 500" in get_parked(conn, "psa", parked_id(conn, bad)).error
            assert "RuntimeError" in get_parked(conn, "buggy", parked_id(conn, bad)).error
        registry = d.metrics
        assert registry.delivery_parked.labels("psa")._value.get() == 1
        assert registry.delivery_parked.labels("buggy")._value.get() == 1
        assert registry.delivery_errors.labels("buggy")._value.get() == 3
        # the receiver is fixed; an operator retries the parked event: it goes out once
        hook.answer = lambda path, key: (204, {})
        with store.transaction() as conn:
            unpark(conn, "psa", parked_id(conn, bad))
        await drain_all(d)
        assert hook.sent_keys().count(bad) == 1 and hook.sent_keys()[-1] == bad
        with store.read() as conn:
            assert [p.route for p in list_parked(conn)] == ["buggy"]
        for state in d.routes.values():
            await state.sink.close()

    asyncio.run(scenario())


def parked_id(conn: Any, key: str) -> int:
    ticket, _, seq = key.partition("-")
    return int(
        conn.exec_driver_sql(
            "SELECT id FROM ticket_events WHERE ticket_id = ? AND seq = ?", (int(ticket), int(seq))
        ).scalar_one()
    )


def test_hostile_ticket_values_render_safely() -> None:
    ticket = {
        "id": 7,
        "status": "resolved",
        "customer": "acme",
        "agent_id": "agt_1",
        "hostname": "pc\r\nBcc: victim@example.com",
        "rule": "DiskFull",
        "labels": {"mountpoint": "C:\r\nX-Evil: 1", "tier": "7"},
        "severity": "warning",
        "tier": 2,
        "summary": "full\r\nBcc: victim@example.com\x1b[31m" + "x" * 5000,
        "runbook": None,
        "value": float("nan"),
        "threshold": float("inf"),
        "context": {},
        "opened_at": 1e300,
        "resolved_at": float("nan"),
    }
    event = {"seq": 2, "kind": "resolved", "at": 1e300, "actor": "x", "message": ""}
    delivery = Delivery(event_id=1, ticket=ticket, event=event)
    message = email_message(delivery, sender="t@msp.example", to=["h@msp.example"])
    raw = message.as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None
    subject = str(parsed["Subject"])
    assert "\n" not in subject and "\r" not in subject and "\x1b" not in subject
    assert len(subject) <= 200
    alert = alertmanager_alert(ticket)
    assert "startsAt" not in alert  # 1e300 is no date: Alertmanager uses "now"
    assert alert["endsAt"]  # a resolve always ends the alert
    json.dumps(alert, allow_nan=False)


def test_a_route_whose_task_dies_restarts_and_says_so(
    store: Store, receiver: Receiver, tmp_path: Path
) -> None:
    route = [{"name": "psa", "webhook": {"url": receiver.url}}]
    agent = enrolled_agent(store)

    async def scenario() -> None:
        d = deliverer(
            store, route, FakeClock(time.time()), poll_interval=0.05, restart_backoff=(0.05, 0.1)
        )
        d.clock = time.time
        task = asyncio.create_task(d.run())
        await async_eventually(lambda: "psa" in registered(store))
        with store.transaction() as conn:  # the route's bookkeeping table vanishes
            conn.exec_driver_sql("ALTER TABLE deliveries RENAME TO deliveries_away")
        fire(store, agent, "A", time.time())
        d.notify()
        await async_eventually(lambda: d.problems() != [])
        assert "delivery route 'psa' down: OperationalError" in d.problems()[0]
        await async_eventually(lambda: d.metrics.delivery_restarts.labels("psa")._value.get() >= 2)
        with store.transaction() as conn:
            conn.exec_driver_sql("ALTER TABLE deliveries_away RENAME TO deliveries")
        await async_eventually(lambda: len(receiver.requests) == 1 and d.problems() == [])
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def registered(store: Store) -> list[str]:
    with store.read() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT route FROM delivery_routes")]


def test_a_hanging_webhook_does_not_delay_the_mail_route(
    store: Store, smtp: tuple[int, list[email.message.Message]]
) -> None:
    smtp_port, mails = smtp
    hanging = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    url = f"http://127.0.0.1:{hanging.getsockname()[1]}/hook"
    routes = [{"name": "psa", "webhook": {"url": url, "timeout": 60}}, mail_route(smtp_port)]
    agent = enrolled_agent(store)

    async def scenario() -> None:
        d = deliverer(store, routes, FakeClock(time.time()), poll_interval=0.05)
        d.clock = time.time
        task = asyncio.create_task(d.run())
        await async_eventually(lambda: len(registered(store)) == 2)
        first = fire(store, agent, "A", time.time())
        d.notify()
        await async_eventually(lambda: len(mails) == 1, deadline=5.0)  # webhook waits 60 s
        second = fire(store, agent, "B", time.time())
        d.notify()
        await async_eventually(lambda: len(mails) == 2, deadline=5.0)
        assert mail_keys(mails) == [f"{first}-1", f"{second}-1"]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(scenario())
    finally:
        hanging.close()


# -- the answers table in docs/delivery.md, one test per row class ------------------------


def answers(
    store: Store, hook: Hook, clock: FakeClock, url: str | None = None, **options: Any
) -> tuple[list[tuple[str, str]], list[str], Deliverer]:
    """Fire one ticket at a route to ``hook`` and drain for a while; the recorded
    (status, error) of its event, the parked routes, and the deliverer."""
    route = [{"name": "psa", "webhook": {"url": url or hook.url}}]
    agent = enrolled_agent(store)

    async def scenario() -> Deliverer:
        d = deliverer(store, route, clock, max_attempts=3, **options)
        await drain_all(d)
        fire(store, agent, "A", T0 + 1)
        for _ in range(8):
            await drain_all(d)
            clock.advance(60.0)
        await d.routes["psa"].sink.close()
        return d

    d = asyncio.run(scenario())
    with store.read() as conn:
        rows = conn.exec_driver_sql("SELECT status, error FROM deliveries").fetchall()
        parked = [p.route for p in list_parked(conn)]
    return [(r[0], r[1]) for r in rows], parked, d


@pytest.mark.parametrize("status", [307, 308])
def test_307_and_308_are_followed_with_the_same_body(
    store: Store, hook: Hook, clock: FakeClock, status: int
) -> None:
    hops = {"/hook": "/moved", "/moved": f"http://127.0.0.1:{hook.port}/final"}
    hook.answer = lambda path, key: (
        (status, {"location": hops[path]}) if path in hops else (204, {})
    )
    rows, parked, _ = answers(store, hook, clock)
    assert rows == [("delivered", None)] and parked == []
    [(path, body)] = hook.accepted
    assert path == "/final" and body["event"]["kind"] == "opened"


@pytest.mark.parametrize(
    "answer",
    [
        (307, {"location": "https://127.0.0.1:1/hook"}),  # another scheme: not followed
        (308, {"location": "/hook"}),  # a loop: deeper than the bound
        (301, {"location": "/elsewhere"}),  # a redirect that would turn POST into GET
        (503, {}),
    ],
    ids=["307-to-https", "308-loop", "301", "503"],
)
def test_redirects_not_followed_and_5xx_are_retried_then_parked_never_failed(
    store: Store, hook: Hook, clock: FakeClock, answer: tuple[int, dict[str, str]]
) -> None:
    hook.answer = lambda path, key: answer
    rows, parked, d = answers(store, hook, clock)
    assert rows == [] and parked == ["psa"]
    assert d.metrics.deliveries.labels("psa", "retry")._value.get() == 3


def test_a_4xx_is_final_and_recorded_failed(store: Store, hook: Hook, clock: FakeClock) -> None:
    hook.answer = lambda path, key: (422, {})
    rows, parked, _ = answers(store, hook, clock)
    assert [r[0] for r in rows] == ["failed"] and "HTTP 422" in str(rows[0][1])
    assert parked == [] and hook.hits == 1


def test_an_unreachable_receiver_parks_nothing_the_route_waits(
    store: Store, hook: Hook, clock: FakeClock
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook"
    rows, parked, d = answers(store, hook, clock, url=closed)
    assert rows == [] and parked == []
    assert d.metrics.deliveries.labels("psa", "retry")._value.get() >= 4  # > max_attempts


def test_alertmanager_sees_one_alert_per_ticket_through_escalation_and_its_resolve(
    store: Store, alertmanager: str, clock: FakeClock
) -> None:
    route = [{"name": "am", "alertmanager": {"url": alertmanager}}]
    agent = enrolled_agent(store)
    clock.now = time.time()  # Alertmanager judges startsAt/endsAt against its own clock

    def alerts_of(ticket: int, active: bool) -> list[dict[str, Any]]:
        params = {"active": str(active).lower(), "silenced": "true", "inhibited": "true"}
        alerts = httpx.get(f"{alertmanager}/api/v2/alerts", params=params).json()
        return [a for a in alerts if a["labels"].get("tripline_ticket") == str(ticket)]

    async def scenario() -> None:
        d = deliverer(store, route, clock)
        await drain_all(d)
        ticket = fire(store, agent, "DiskFull", clock.now)
        await drain_all(d)
        with store.transaction() as conn:
            tickets.reassign_tier(conn, ticket, tier=2, actor="alice", now=time.time())
        await drain_all(d)
        [alert] = alerts_of(ticket, active=True)  # one alert, not one per tier
        assert alert["annotations"]["tier"] == "2"
        assert "tier" not in alert["labels"] and "severity" not in alert["labels"]
        clear(store, agent, "DiskFull", time.time())
        await drain_all(d)
        deadline = time.monotonic() + 10  # resolved once its endsAt is past on AM's clock
        while alerts_of(ticket, active=True) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert alerts_of(ticket, active=True) == []
        assert len(alerts_of(ticket, active=False)) <= 1
        await d.routes["am"].sink.close()

    asyncio.run(scenario())


def test_parked_events_are_listed_and_retried_through_the_api_and_cli_within_scope(
    tmp_path: Path, hook: Hook, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.conftest import collector_config
    from tripline.collector import apitokens
    from tripline.collector.app import CollectorApp
    from tripline.collector.cli import main

    data_dir = tmp_path / "collector"
    config = dataclasses.replace(
        collector_config(data_dir, delivery_max_attempts=1),
        routes=parse_routes([{"name": "psa", "webhook": {"url": hook.url}}]),
    )
    hook.answer = lambda path, key: (500, {})  # the receiver refuses everything at first

    async def scenario() -> None:
        app = CollectorApp(config)
        await app.start()
        try:
            store = app.store
            await async_eventually(lambda: "psa" in registered(store))
            acme = fire(store, enrolled_agent(store, "acme"), "A", time.time())
            globex = fire(
                store, enrolled_agent(store, "globex"), "A", time.time(), customer="globex"
            )
            app.deliverer.notify()

            def parked() -> list[str]:
                with store.read() as conn:
                    return [p.idempotency_key for p in list_parked(conn)]

            await async_eventually(lambda: parked() == [f"{acme}-1", f"{globex}-1"])
            with store.transaction() as conn:
                _, secret = apitokens.create_token(conn, "ops-acme", ["acme"], actor="t", now=T0)
            base = f"http://127.0.0.1:{app.http_port}"
            auth = {"Authorization": f"Bearer {secret}"}
            async with httpx.AsyncClient(base_url=base + "/api/v1", headers=auth) as api:
                metrics = (await api.get(base + "/metrics")).text
                assert 'tripline_collector_delivery_parked_total{route="psa"} 2.0' in metrics
                listed = (await api.get("/deliveries/parked")).json()["items"]
                assert [p["idempotency_key"] for p in listed] == [f"{acme}-1"]  # scope
                assert "HTTP 500" in listed[0]["error"] and listed[0]["attempts"] == 1
                refused = await api.get("/deliveries/parked", params={"customer": "globex"})
                assert refused.status_code == 403
                with store.read() as conn:
                    acme_event, globex_event = (
                        parked_id(conn, f"{acme}-1"),
                        parked_id(conn, f"{globex}-1"),
                    )
                hidden = await api.post(f"/deliveries/parked/psa/{globex_event}/retry")
                assert hidden.status_code == 404  # another customer's: as if missing
                hook.answer = lambda path, key: (204, {})  # the receiver is fixed
                retried = await api.post(f"/deliveries/parked/psa/{acme_event}/retry")
                assert retried.status_code == 200 and retried.json()["status"] == "pending"
                await async_eventually(lambda: hook.sent_keys() == [f"{acme}-1"])
                again = await api.post(f"/deliveries/parked/psa/{acme_event}/retry")
                assert again.status_code == 404
            with store.read() as conn:
                [entry] = apitokens.audit_entries(conn, action="delivery.retry")
            assert (entry.actor, entry.customer) == ("ops-acme", "acme")
            # the CLI on the data dir sees every customer and retries the other one
            cli = ("--data-dir", str(data_dir))
            assert await asyncio.to_thread(main, ["deliveries", "parked", *cli]) == 0
            assert f"{globex}-1" in capsys.readouterr().out
            code = await asyncio.to_thread(
                main, ["deliveries", "retry", "psa", str(globex_event), *cli]
            )
            assert code == 0
            await async_eventually(lambda: hook.sent_keys() == [f"{acme}-1", f"{globex}-1"])
            assert parked() == []
            assert await asyncio.to_thread(main, ["deliveries", "retry", "psa", "999", *cli]) == 2
            # a route task that dies makes /readyz say so until it runs again
            with store.transaction() as conn:
                conn.exec_driver_sql("ALTER TABLE deliveries RENAME TO deliveries_away")
            fire(store, enrolled_agent(store, "acme"), "B", time.time())
            app.deliverer.notify()

            async def readyz() -> tuple[int, str]:
                async with httpx.AsyncClient() as client:
                    answer = await client.get(f"http://127.0.0.1:{app.http_port}/readyz")
                return answer.status_code, answer.text

            async def down() -> bool:
                return (await readyz())[0] == 503

            await async_eventually(down)
            assert "delivery route 'psa' down: OperationalError" in (await readyz())[1]
            with store.transaction() as conn:
                conn.exec_driver_sql("ALTER TABLE deliveries_away RENAME TO deliveries")

            async def up() -> bool:
                return (await readyz())[0] == 200

            await async_eventually(up)
        finally:
            await app.stop(grace=0.1)

    asyncio.run(scenario())
