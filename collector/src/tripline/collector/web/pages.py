"""The page's routes: login and logout, the queue, one ticket, and its ack/comment/resolve.

Each handler turns the browser's request into a call to the HTTP API (in process, through
httpx's ASGI transport, with the session's API token as the bearer) and renders what the
API answered. Authorization, scope, validation and the audit log are therefore the API's
own: a token scoped to one customer sees another's ticket here exactly as it does there,
as a 404. The page adds only what a browser needs: the cookie, CSRF checks, HTML.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tripline.collector.web import render, session
from tripline.collector.web.session import FormRefused, Session

PAGE_SIZE = 50
# the page's ticket actions (each the API's POST /tickets/{id}/<action>) -> the word shown after it
ACTIONS = {"ack": "acknowledged", "comment": "commented", "resolve": "resolved"}
QUEUE_FILTERS = ("customer", "status", "tier", "severity")
# the report's period when the form names none: the last 30 days, today included
REPORT_DAYS = dt.timedelta(days=30)

log = logging.getLogger(__name__)

# No inline script or style anywhere: the page's own files only, no framing, no referrer.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
]


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer of the wrapped app, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                # A page that states its own policy keeps it (the service report: inline
                # style, nothing else); every other header is ours.
                own = [(k, v) for k, v in headers if k == b"content-security-policy"]
                ours = [(k, v) for k, v in SECURITY_HEADERS if not (own and k == own[0][0])]
                kept = [(k, v) for k, v in headers if k not in SECURITY_HEADERS_NAMES]
                message = {**message, "headers": [*kept, *own, *ours]}
            await send(message)

        await self.app(scope, receive, send_secured)


SECURITY_HEADERS_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


class _Pages:
    def __init__(self, api_app: ASGIApp, refused: Callable[[str], None]) -> None:
        # The API answers in this process; the base URL only fills the Host header.
        self.api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api_app), base_url="http://tripline-api"
        )
        self.refused = refused
        self.env = render.environment()
        self.static_files = {
            name: resources.files("tripline.collector.web").joinpath("static", name).read_bytes()
            for name in ("web.css", "web.js")
        }

    # -- plumbing ---------------------------------------------------------------------

    def _page(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        values.setdefault("csrf", None)  # no session: no logout button
        html = self.env.get_template(template).render(
            base=request.scope.get("root_path", ""), **values
        )
        return HTMLResponse(html, status_code=status)

    def _to_login(self, request: Request, why: str | None = None) -> Response:
        target = f"{request.scope.get('root_path', '')}/login"
        response = RedirectResponse(target + (f"?{urlencode({'why': why})}" if why else ""), 303)
        session.clear_cookie(response, request, session.SESSION_COOKIE)
        return response

    async def _call(
        self,
        sess: Session,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        return await self.api.request(
            method,
            path,
            params=params,
            json=body,
            headers={"authorization": f"Bearer {sess.api_token}"},
        )

    def _refuse(self, request: Request, refusal: FormRefused, sess: Session | None) -> Response:
        self.refused(refusal.reason)
        log.warning(
            "ticket page refused a form",
            extra={"reason": refusal.reason, "path": request.url.path, "status": refusal.status},
        )
        return self._page(
            request,
            "error.html",
            refusal.status,
            message=refusal.message,
            csrf=None if sess is None else sess.csrf,
        )

    def _api_error(self, request: Request, answer: httpx.Response, sess: Session) -> Response:
        return self._page(
            request, "error.html", answer.status_code, message=_api_message(answer), csrf=sess.csrf
        )

    # -- login ------------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/tickets", 303)

    async def login_form(self, request: Request, error: str | None = None) -> Response:
        nonce = session.new_nonce()
        why = {"expired": "Your API token is no longer valid; paste it again."}.get(
            request.query_params.get("why", "")
        )
        response = self._page(
            request, "login.html", 401 if error else 200, login_csrf=nonce, error=error or why
        )
        session.set_cookie(response, request, session.LOGIN_COOKIE, nonce)
        return response

    async def login(self, request: Request) -> Response:
        try:
            session.check_origin(request)
            form = await session.read_form(request)
            expected = request.cookies.get(session.LOGIN_COOKIE, "")
            if session.LOGIN_NONCE.fullmatch(expected) is None:
                raise FormRefused(403, "csrf", "cookies are needed to log in; reload and retry")
            session.check_csrf(expected, form)
        except FormRefused as refusal:
            return self._refuse(request, refusal, None)
        token = form.get("token", "").strip()
        if session.API_TOKEN.fullmatch(token) is None:
            self.refused("login")
            return await self.login_form(
                request,
                "That is not an API token: they start with tla_ "
                "(create one with 'tripline api-tokens create --name NAME').",
            )
        sess = session.new_session(token)
        answer = await self._call(sess, "GET", "/tickets", {"limit": "1"})
        if answer.status_code == 401:
            self.refused("login")
            log.warning("ticket page login with an unknown or revoked API token")
            return await self.login_form(request, "That API token is unknown or revoked.")
        if answer.status_code != 200:
            return self._api_error(request, answer, sess)
        response = RedirectResponse(f"{request.scope.get('root_path', '')}/tickets", 303)
        session.set_cookie(response, request, session.SESSION_COOKIE, sess.cookie_value())
        session.clear_cookie(response, request, session.LOGIN_COOKIE)
        return response

    async def logout(self, request: Request) -> Response:
        sess = session.current(request)
        if sess is not None:
            try:
                session.check_origin(request)
                session.check_csrf(sess.csrf, await session.read_form(request))
            except FormRefused as refusal:
                return self._refuse(request, refusal, sess)
        return self._to_login(request)

    # -- pages ------------------------------------------------------------------------

    async def queue(self, request: Request) -> Response:
        sess = session.current(request)
        if sess is None:
            return self._to_login(request)
        filters = {
            key: value
            for key in QUEUE_FILTERS
            if (value := request.query_params.get(key, "").strip())
        }
        offset = request.query_params.get("offset", "0")
        params = {**filters, "limit": str(PAGE_SIZE), "offset": offset}
        answer = await self._call(sess, "GET", "/tickets", params)
        if answer.status_code == 401:
            return self._to_login(request, "expired")
        customers = await self._customers(sess)
        if answer.status_code in (400, 403):
            # a filter the API refused: the form again, with its reason
            return self._page(
                request,
                "queue.html",
                answer.status_code,
                tickets=[],
                filters=filters,
                customers=customers,
                next_query=None,
                previous_query=None,
                error=_api_message(answer),
                csrf=sess.csrf,
            )
        if answer.status_code != 200:
            return self._api_error(request, answer, sess)
        page = answer.json()
        offset_number = int(offset) if offset.isdigit() else 0
        previous = max(0, offset_number - PAGE_SIZE) if offset_number > 0 else None
        return self._page(
            request,
            "queue.html",
            tickets=page["items"],
            filters=filters,
            customers=customers,
            next_query=None
            if page["next_offset"] is None
            else urlencode({**filters, "offset": page["next_offset"]}),
            previous_query=None if previous is None else urlencode({**filters, "offset": previous}),
            error=None,
            csrf=sess.csrf,
        )

    async def _customers(self, sess: Session) -> list[str]:
        """Customers to suggest in the filter: those of the agents the token sees."""
        answer = await self._call(sess, "GET", "/agents", {"limit": "1000"})
        if answer.status_code != 200:
            return []
        return sorted({str(agent["customer"]) for agent in answer.json()["items"]})

    async def ticket(self, request: Request) -> Response:
        sess = session.current(request)
        if sess is None:
            return self._to_login(request)
        return await self._ticket_page(request, sess)

    async def _ticket_page(
        self, request: Request, sess: Session, status: int = 200, error: str | None = None
    ) -> Response:
        ticket_id = request.path_params["ticket_id"]
        answer = await self._call(sess, "GET", f"/tickets/{quote(ticket_id, safe='')}")
        if answer.status_code == 401:
            return self._to_login(request, "expired")
        if answer.status_code != 200:
            return self._api_error(request, answer, sess)
        ticket = answer.json()
        agent_answer = await self._call(
            sess, "GET", f"/agents/{quote(ticket['agent_id'], safe='')}"
        )
        agent = agent_answer.json() if agent_answer.status_code == 200 else None
        done = ACTIONS.get(request.query_params.get("done", ""))
        return self._page(
            request,
            "ticket.html",
            status,
            ticket=ticket,
            agent=agent,
            done=done,
            error=error,
            csrf=sess.csrf,
        )

    async def act(self, request: Request) -> Response:
        sess = session.current(request)
        if sess is None:
            return self._to_login(request)
        action = request.path_params["action"]
        if action not in ACTIONS:
            return self._page(request, "error.html", 404, message="no such action", csrf=sess.csrf)
        try:
            session.check_origin(request)
            form = await session.read_form(request)
            session.check_csrf(sess.csrf, form)
        except FormRefused as refusal:
            return self._refuse(request, refusal, sess)
        body: dict[str, Any] = {}
        if action == "comment":
            body["text"] = form.get("text", "")
        elif action == "resolve" and form.get("note", "").strip():
            body["note"] = form["note"]
        ticket_id = request.path_params["ticket_id"]
        answer = await self._call(
            sess, "POST", f"/tickets/{quote(ticket_id, safe='')}/{action}", body=body
        )
        if answer.status_code == 401:
            return self._to_login(request, "expired")
        if answer.status_code == 200:
            target = f"{request.scope.get('root_path', '')}/tickets/{answer.json()['id']}"
            return RedirectResponse(f"{target}?done={action}", 303)
        if answer.status_code in (400, 409):
            # the ticket again, with the API's reason above the forms
            reason = _api_message(answer)
            return await self._ticket_page(request, sess, answer.status_code, reason)
        return self._api_error(request, answer, sess)

    async def report(self, request: Request) -> Response:
        """The customer's service report (the API's HTML), for the period the form gives;
        the last 30 days when it gives none. Scope and validation are the API's."""
        sess = session.current(request)
        if sess is None:
            return self._to_login(request)
        customer = request.query_params.get("customer", "").strip()
        today = dt.datetime.now(dt.UTC).date()
        first = request.query_params.get("from", "").strip() or str(today - REPORT_DAYS)
        until = request.query_params.get("to", "").strip() or str(today + dt.timedelta(days=1))
        if not customer:
            return self._page(
                request, "error.html", 400, message="name a customer for the report", csrf=sess.csrf
            )
        answer = await self._call(
            sess,
            "GET",
            f"/reports/{quote(customer, safe='')}",
            {"from": first, "to": until, "format": "html"},
        )
        if answer.status_code == 401:
            return self._to_login(request, "expired")
        if answer.status_code != 200:
            return self._api_error(request, answer, sess)
        policy = answer.headers.get("content-security-policy", "default-src 'none'")
        return HTMLResponse(answer.text, headers={"Content-Security-Policy": policy})

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        data = self.static_files.get(name)
        if data is None:
            return Response("Not Found", 404, media_type="text/plain")
        media = "text/css" if name.endswith(".css") else "text/javascript"
        return Response(data, media_type=media)


def _api_message(answer: httpx.Response) -> str:
    """The API's ``{"error": ...}`` text, or its body when it is not that."""
    try:
        data = answer.json()
    except ValueError:
        return answer.text
    return str(data["error"]) if isinstance(data, dict) and "error" in data else answer.text


def build_web(api_app: ASGIApp, refused: Callable[[str], None] = lambda reason: None) -> ASGIApp:
    """The ticket page as an app to mount at WEB_PREFIX; `api_app` is the HTTP API's app
    (from `build_api`), `refused(reason)` is called for each refused form or login."""
    p = _Pages(api_app, refused)
    app = Starlette(
        routes=[
            Route("/", p.root),
            Route("/login", p.login_form),
            Route("/login", p.login, methods=["POST"]),
            Route("/logout", p.logout, methods=["POST"]),
            Route("/tickets", p.queue),
            Route("/tickets/{ticket_id}", p.ticket),
            Route("/tickets/{ticket_id}/{action}", p.act, methods=["POST"]),
            Route("/reports", p.report),
            Route("/static/{name}", p.static),
        ]
    )
    return _SecurityHeaders(app)
