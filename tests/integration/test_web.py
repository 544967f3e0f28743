"""The ticket page (/ui) on a running collector, driven over real HTTP with httpx: login,
cookies, CSRF, security headers, scope, hostile text. The real-browser flows are in
tests/e2e/test_web_browser.py."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from tests.integration.conftest import running_collector
from tripline.collector import apitokens, enrollment, ticketmodel, ticketqueries, tickets
from tripline.collector.app import CollectorApp
from tripline.collector.ticketmodel import TicketPolicy
from tripline.collector.web.session import MAX_FORM_BYTES

HOSTILE = '<script>alert("pwned")</script>'


@dataclass
class Site:
    app: CollectorApp
    base: str
    tickets: dict[str, int]  # customer -> its open ticket
    secrets: dict[str, str]  # token name -> secret

    def ticket(self, ticket_id: int) -> ticketmodel.Ticket:
        with self.app.store.read() as conn:
            return ticketqueries.get_ticket(conn, ticket_id)

    def refusals(self, reason: str) -> float:
        registry: CollectorRegistry = self.app.registry
        value = registry.get_sample_value(
            "tripline_collector_web_refusals_total", {"reason": reason}
        )
        return value or 0.0


@contextlib.asynccontextmanager
async def site(tmp_path: Path, runbook: str = "Empty the temp folders.") -> AsyncIterator[Site]:
    async with running_collector(tmp_path / "collector") as app:
        now = app.clock()
        found: dict[str, int] = {}
        for customer, host in (("acme", HOSTILE), ("globex", "gx-pc-01")):
            with app.store.transaction() as conn:
                _, secret = enrollment.create_token(conn, customer, now=now)
            with app.store.transaction() as conn:
                agent, _ = enrollment.enroll_agent(
                    conn, secret, hostname=host, site="hq", inventory={"os": HOSTILE}, now=now
                )
            with app.store.transaction() as conn:
                found[customer] = tickets.on_alert_firing(
                    conn,
                    customer=customer,
                    agent_id=agent.agent_id,
                    hostname=host,
                    rule="DiskFull",
                    labels=(("mountpoint", "/"),),
                    severity="warning",
                    tier=1,
                    summary=f"{host}: / is 95% full",
                    runbook=runbook,
                    value=0.95,
                    threshold=0.9,
                    context={"top_cpu": [{"pid": 7, "name": HOSTILE, "cmdline": HOSTILE}]},
                    now=now,
                    policy=TicketPolicy(),
                ).ticket_id
        secrets = {}
        with app.store.transaction() as conn:
            for name, scope in (("ops-acme", ["acme"]), ("ops-all", None)):
                _, secrets[name] = apitokens.create_token(conn, name, scope, actor="t", now=now)
        yield Site(app, f"http://127.0.0.1:{app.http_port}", found, secrets)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, html
    return match.group(1)


async def login(http: httpx.AsyncClient, secret: str) -> str:
    """Log in as a browser does; returns the session's CSRF token."""
    form = await http.get("/ui/login")
    answer = await http.post("/ui/login", data={"csrf": _csrf(form.text), "token": secret})
    assert answer.status_code == 303, answer.text
    return _csrf((await http.get("/ui/tickets")).text)


def test_pages_need_a_login_and_the_cookie_is_locked_down(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.base) as http:
            answer = await http.get("/ui/tickets")
            assert answer.status_code == 303
            assert answer.headers["location"] == "/ui/login"

            form = await http.get("/ui/login")
            assert form.status_code == 200
            headers = form.headers
            csp = headers["content-security-policy"]
            assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
            assert "frame-ancestors 'none'" in csp
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "no-referrer"
            assert headers["x-content-type-options"] == "nosniff"

            # an unknown token: refused and counted
            csrf = _csrf(form.text)
            wrong = await http.post("/ui/login", data={"csrf": csrf, "token": "tla_" + "x" * 43})
            assert wrong.status_code == 401
            assert "unknown or revoked" in wrong.text
            assert s.refusals("login") == 1
            # no login without the login form's own token (login CSRF)
            forged = await http.post("/ui/login", data={"token": s.secrets["ops-all"]})
            assert forged.status_code == 403
            assert s.refusals("csrf") == 1

            form = await http.get("/ui/login")
            ok = await http.post(
                "/ui/login", data={"csrf": _csrf(form.text), "token": s.secrets["ops-all"]}
            )
            assert ok.status_code == 303
            cookie = next(
                c for c in ok.headers.get_list("set-cookie") if c.startswith("tripline_session=")
            )
            attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
            assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
            assert "secure" not in attributes  # plain http: a Secure cookie would be lost
            # error pages carry the headers too
            missing = await http.get("/ui/tickets/999")
            assert missing.status_code == 404
            assert missing.headers["x-frame-options"] == "DENY"

            # over https (a TLS proxy uvicorn trusts on loopback), the cookie is Secure
            form = await http.get("/ui/login", headers={"x-forwarded-proto": "https"})
            assert "secure" in form.headers["set-cookie"].lower()

            # logout needs the CSRF token, then the session is gone
            csrf = _csrf((await http.get("/ui/tickets")).text)
            out = await http.post("/ui/logout", data={"csrf": csrf})
            assert out.status_code == 303
            assert (await http.get("/ui/tickets")).status_code == 303

    asyncio.run(scenario())


def test_forms_without_the_sessions_csrf_token_change_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.base) as http:
            csrf = await login(http, s.secrets["ops-all"])
            ticket = s.tickets["acme"]
            path = f"/ui/tickets/{ticket}/ack"

            assert (await http.post(path, data={"note": "no token"})).status_code == 403
            # one character changed (a token ending in "0" must not stay itself)
            tampered = csrf[:-1] + ("1" if csrf.endswith("0") else "0")
            assert (await http.post(path, data={"csrf": tampered})).status_code == 403
            # another login's token does not fit this session
            async with httpx.AsyncClient(base_url=s.base) as other:
                theirs = await login(other, s.secrets["ops-all"])
            assert theirs != csrf
            assert (await http.post(path, data={"csrf": theirs})).status_code == 403
            assert s.refusals("csrf") == 3
            # a browser that says the form came from elsewhere is refused even with a token
            cross = await http.post(
                path, data={"csrf": csrf}, headers={"origin": "https://evil.example"}
            )
            assert cross.status_code == 403
            site_header = {"sec-fetch-site": "cross-site"}
            assert (
                await http.post(path, data={"csrf": csrf}, headers=site_header)
            ).status_code == 403
            assert s.refusals("origin") == 2
            # bounded: a huge form is refused before it is read whole; JSON is not a form
            huge = await http.post(path, data={"csrf": csrf, "x": "a" * MAX_FORM_BYTES})
            assert huge.status_code == 413
            as_json = await http.post(path, json={"csrf": csrf})
            assert as_json.status_code == 415
            assert s.ticket(ticket).status == "open"

            done = await http.post(path, data={"csrf": csrf})
            assert done.status_code == 303
            assert done.headers["location"] == f"/ui/tickets/{ticket}?done=ack"
            assert s.ticket(ticket).acknowledged_by == "ops-all"

    asyncio.run(scenario())


def test_a_scoped_token_sees_and_changes_only_its_customers_tickets(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path) as s, httpx.AsyncClient(base_url=s.base) as http:
            csrf = await login(http, s.secrets["ops-acme"])
            theirs = s.tickets["globex"]
            queue = await http.get("/ui/tickets")
            assert f'data-ticket="{s.tickets["acme"]}"' in queue.text
            assert f'data-ticket="{theirs}"' not in queue.text and "gx-pc-01" not in queue.text
            # naming the other customer is the API's 403; its ticket the API's 404
            named = await http.get("/ui/tickets", params={"customer": "globex"})
            assert named.status_code == 403
            assert "may not see customer &#39;globex&#39;" in named.text
            direct = await http.get(f"/ui/tickets/{theirs}")
            assert direct.status_code == 404 and "gx-pc-01" not in direct.text
            for action, data in (("ack", {}), ("comment", {"text": "hi"}), ("resolve", {})):
                answer = await http.post(
                    f"/ui/tickets/{theirs}/{action}", data={"csrf": csrf, **data}
                )
                assert answer.status_code == 404, action
            untouched = s.ticket(theirs)
            assert untouched.status == "open" and len(untouched.events) == 1

    asyncio.run(scenario())


def test_hostile_text_renders_as_text(tmp_path: Path) -> None:
    async def scenario() -> None:
        runbook = "javascript:alert(1)"
        async with site(tmp_path, runbook=runbook) as s, httpx.AsyncClient(base_url=s.base) as http:
            csrf = await login(http, s.secrets["ops-all"])
            ticket = s.tickets["acme"]
            comment = f'</textarea>{HOSTILE}<img src=x onerror="alert(2)">'
            posted = await http.post(
                f"/ui/tickets/{ticket}/comment", data={"csrf": csrf, "text": comment}
            )
            assert posted.status_code == 303
            pages = [(await http.get("/ui/tickets")).text]
            pages.append((await http.get(f"/ui/tickets/{ticket}")).text)
            for html in pages:
                assert "<script>alert" not in html and "<img" not in html
                assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
                # the page's only scripts are its own file
                assert re.findall(r"<script[^>]*>", html) == [
                    '<script src="/ui/static/web.js" defer>'
                ]
            page = pages[1]
            assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in page  # the comment
            assert 'href="javascript:' not in page and "javascript:alert(1)" in page

            # an empty comment is the API's 400, shown on the ticket page
            empty = await http.post(
                f"/ui/tickets/{ticket}/comment", data={"csrf": csrf, "text": " "}
            )
            assert empty.status_code == 400 and "needs some text" in empty.text

    asyncio.run(scenario())
