"""The operators' HTTP API under /api/v1: tickets, agents, enrollment tokens, rules, alerts.

Mounted on the collector's HTTP port (`collector.http`) and served in its asyncio loop.
Every request but the OpenAPI document carries ``Authorization: Bearer <API token>``
(`collector.apitokens`). A token sees only its customers: another customer's ticket, agent
or enrollment token answers 404 exactly as a missing one does, so nothing tells that it
exists; a request that itself names a customer outside the scope (a filter, a new
enrollment token) answers 403. Reads run in a worker thread; writes go through the
collector's committer, in one transaction with their audit row. Bad input answers 4xx
with ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, select
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tripline.alerts.model import SEVERITIES
from tripline.alerts.rules import Rule
from tripline.collector import apitokens, delivery, maintenance, suppression, tickets
from tripline.collector.apitokens import ApiToken
from tripline.collector.openapi import (
    ALERT_PHASES,
    API_PREFIX,
    MAX_BODY_BYTES,
    MAX_EXPIRES_IN,
    MAX_FILTER,
    MAX_ID,
    MAX_LIMIT,
    MAX_OFFSET,
    MAX_TEXT,
    MAX_TIME,
    MAX_WINDOW_DURATION,
    openapi_document,
)
from tripline.collector.pipeline import Pipeline
from tripline.collector.schema import TICKET_STATUSES
from tripline.collector.schema import tickets as tickets_table
from tripline.collector.store import (
    AgentNotFound,
    AgentRecord,
    EnrollmentToken,
    EnrollmentTokenNotFound,
    Store,
    StoreUnavailable,
)

T = TypeVar("T")


class ApiError(Exception):
    """Answered as ``{"error": message}`` with this status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class ApiContext:
    store: Store
    pipeline: Pipeline
    clock: Callable[[], float] = time.time


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        # A value can be infinite (an agent that never reported has been silent "forever");
        # JSON has no such number, so it is sent as null.
        return super().render(_finite(content))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _Json({"error": message}, status_code=status, headers=headers)


# -- input ----------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]{1,19}")


def _whole(text: str, what: str, low: int, high: int) -> int:
    if _DIGITS.fullmatch(text) is None or not low <= int(text) <= high:
        raise ApiError(400, f"{what} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


def _plain(text: str, what: str, max_length: int = MAX_FILTER) -> str:
    """Free text for a filter or note: any characters but NUL (PostgreSQL cannot store it)."""
    if "\x00" in text:
        raise ApiError(400, f"{what} must not contain NUL characters")
    if len(text) > max_length:
        raise ApiError(400, f"{what} must be at most {max_length} characters")
    return text


def _route_name(text: str) -> str:
    if not text:
        raise ApiError(400, "route must name a delivery route of the collector config")
    return _plain(text, "route", 128)


def _choice(text: str, what: str, choices: Collection[str]) -> str:
    if text not in choices:
        raise ApiError(400, f"{what} must be one of {', '.join(choices)}, not {text!r}")
    return text


def _query(request: Request, allowed: Collection[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ApiError(400, f"unknown query parameter {key!r} (known: {known})")
        if key in found:
            raise ApiError(400, f"query parameter {key!r} given more than once")
        found[key] = value
    return found


PAGING = ("limit", "offset")


def _paging(params: Mapping[str, str]) -> tuple[int, int]:
    limit = _whole(params["limit"], "limit", 1, MAX_LIMIT) if "limit" in params else 100
    offset = _whole(params["offset"], "offset", 0, MAX_OFFSET) if "offset" in params else 0
    return limit, offset


def _page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    """`items` holds up to limit + 1 entries: one more tells there is a next page."""
    more = len(items) > limit
    return {"items": items[:limit], "next_offset": offset + limit if more else None}


async def _body(request: Request, fields: Collection[str], required: Collection[str] = ()) -> Any:
    """The JSON object sent, with only `fields` and all of `required`; {} when empty.

    The body is counted while it streams in (chunked ones too) and refused with 413 the
    moment it passes MAX_BODY_BYTES, so a huge body never sits in memory; anything that
    is not one strict JSON object answers 400 (see `_parse_json`).
    """
    too_large = ApiError(413, f"the request body must be at most {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "Content-Length must be a whole number of bytes")
        if int(declared) > MAX_BODY_BYTES:
            raise too_large
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise too_large
    except ClientDisconnect:
        raise ApiError(400, "the request body was not received whole") from None
    data = _parse_json(bytes(raw)) if raw.strip() else {}
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = set(data) - set(fields)
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ApiError(400, f"unknown fields {sorted(unknown)} (known: {known})")
    missing = [name for name in required if name not in data]
    if missing:
        raise ApiError(400, f"missing required fields {missing}")
    return data


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        raise _BadJson(f"duplicate keys {duplicated[:5]}")
    return dict(pairs)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJson(f"number {text[:40]} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not JSON")


class _BadJson(ValueError):
    pass


def _parse_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no numbers beyond a float, no duplicate
    keys, no lone surrogates (``"\\ud800"`` parses in Python but cannot be stored or
    encoded again), nesting as deep as the parser allows. Each answers 400."""
    try:
        text = raw.decode("utf-8")
        data = json.loads(
            text,
            parse_float=_json_float,
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicate_keys,
        )
    except UnicodeDecodeError:
        raise ApiError(400, "the request body must be UTF-8") from None
    except _BadJson as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body must be a JSON object") from None
    pending = [data]
    while pending:  # iterative: the document may be nested as deep as the parser allowed
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(
                    400, "the request body holds a lone surrogate (\\ud800-\\udfff) in a string"
                ) from None
    return data


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ApiError(400, f"field {key!r} must be a string")
    return _plain(value, f"field {key!r}", MAX_TEXT)


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _text(data, key)


def _integer(data: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = data.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"field {key!r} must be a whole number from {low} to {high}")
    return value


WINDOW_FIELDS = (*maintenance.SCOPE_FIELDS, *maintenance.SCHEDULE_FIELDS, "comment")
_WINDOW_TEXT_LIMITS = {"agent_id": 64, "comment": MAX_TEXT}


def _window_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The body's window fields, their types and sizes checked; `collector.maintenance`
    checks what they mean together (one schedule, some scope)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            out[key] = "" if key == "comment" else None
        elif key in ("starts_at", "ends_at", "duration"):
            low, high = (0.0, MAX_TIME) if key != "duration" else (0.0, MAX_WINDOW_DURATION)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not low <= value <= high
                or (key == "duration" and value == 0)
            ):
                kind = "seconds above 0" if key == "duration" else "unix seconds from 0"
                raise ApiError(400, f"field {key!r} must be a number of {kind} up to {high:.0f}")
            out[key] = float(value)
        else:
            text = _text(data, key)
            _plain(text, f"field {key!r}", _WINDOW_TEXT_LIMITS.get(key, MAX_FILTER))
            if key in maintenance.SCOPE_FIELDS and not text.strip():
                raise ApiError(400, f"field {key!r} must be a non-empty name or null")
            out[key] = text.strip() if key in maintenance.SCOPE_FIELDS else text
    return out


# -- output ---------------------------------------------------------------------------


def ticket_json(ticket: tickets.Ticket, *, with_events: bool = True) -> dict[str, Any]:
    out = ticket.to_dict()
    if not with_events:
        del out["events"]
    return out


def rule_json(rule: Rule, token: ApiToken) -> dict[str, Any]:
    overrides = {
        customer: {k: v for k, v in asdict(o).items() if v is not None}
        for customer, o in sorted(rule.overrides.items())
        if token.allows(customer)
    }
    return {
        "name": rule.name,
        "metric": rule.metric,
        "match": [asdict(m) for m in rule.matchers],
        "op": rule.op,
        "threshold": rule.threshold,
        "for": rule.for_seconds,
        "clear": {"threshold": rule.clear_threshold, "for": rule.clear_for_seconds},
        "window": None if rule.window is None else asdict(rule.window),
        "severity": rule.severity,
        "tier": rule.tier,
        "summary": rule.summary,
        "runbook": rule.runbook,
        "builtin": rule.builtin,
        "overrides": overrides,
    }


def _token_json(token: EnrollmentToken) -> dict[str, Any]:
    return asdict(token)


class _Handlers:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    # -- plumbing ---------------------------------------------------------------------

    async def _read(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.ctx.store.read() as conn:
                return work(conn)

        return await asyncio.to_thread(run)

    async def _write(self, work: Callable[[Connection], T]) -> T:
        return await self.ctx.pipeline.committer.submit(work)

    async def _caller(self, request: Request) -> ApiToken:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="tripline"'}
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(
                401,
                "send 'Authorization: Bearer <API token>' (an operator creates one with "
                "'tripline api-tokens create --name NAME')",
                challenge,
            )
        token = await self._read(lambda conn: apitokens.authenticate(conn, secret.strip()))
        if token is None:
            raise ApiError(401, "the API token is unknown or revoked", challenge)
        return token

    @staticmethod
    def _scope_filter(token: ApiToken, customer: str | None) -> None:
        if customer is not None and not token.allows(customer):
            raise ApiError(403, f"this API token may not see customer {customer!r}")

    # -- tickets ----------------------------------------------------------------------

    async def list_tickets(self, request: Request) -> Response:
        token = await self._caller(request)
        params = _query(request, ("status", "customer", "severity", "tier", "agent_id", *PAGING))
        limit, offset = _paging(params)
        status = params.get("status")
        if status is not None:
            _choice(status, "status", TICKET_STATUSES)
        customer = params.get("customer")
        if customer is not None:
            self._scope_filter(token, _plain(customer, "customer"))
        severity = params.get("severity")
        if severity is not None:
            _choice(severity, "severity", SEVERITIES)
        tier = _whole(params["tier"], "tier", 1, 3) if "tier" in params else None
        agent_id = _plain(params["agent_id"], "agent_id") if "agent_id" in params else None
        rows = await self._read(
            lambda conn: tickets.list_tickets(
                conn,
                status=status,  # type: ignore[arg-type]
                customer=customer,
                customers=token.customers,
                severity=severity,
                tier=tier,
                agent_id=agent_id,
                limit=limit + 1,
                offset=offset,
            )
        )
        return _Json(_page([ticket_json(t, with_events=False) for t in rows], limit, offset))

    def _ticket_id(self, request: Request) -> int:
        return _whole(request.path_params["ticket_id"], "ticket id", 1, MAX_ID)

    @staticmethod
    def _visible_ticket(conn: Connection, token: ApiToken, ticket_id: int) -> str:
        """The ticket's customer; TicketNotFound when missing or outside the scope."""
        customer = conn.scalar(
            select(tickets_table.c.customer).where(tickets_table.c.id == ticket_id)
        )
        if customer is None or not token.allows(customer):
            raise tickets.TicketNotFound(ticket_id)
        return str(customer)

    async def show_ticket(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        ticket_id = self._ticket_id(request)

        def work(conn: Connection) -> tickets.Ticket:
            self._visible_ticket(conn, token, ticket_id)
            return tickets.get_ticket(conn, ticket_id)

        return _Json(ticket_json(await self._read(work)))

    async def _change_ticket(
        self,
        request: Request,
        token: ApiToken,
        action: str,
        data: dict[str, Any],
        change: Callable[[Connection, int, str, float], tickets.Ticket],
    ) -> Response:
        ticket_id = self._ticket_id(request)
        now = self.ctx.clock()

        def work(conn: Connection) -> tickets.Ticket:
            customer = self._visible_ticket(conn, token, ticket_id)
            ticket = change(conn, ticket_id, token.name, now)
            apitokens.record(
                conn,
                actor=token.name,
                action=f"ticket.{action}",
                target=f"ticket/{ticket_id}",
                customer=customer,
                data=data,
                now=now,
            )
            return ticket

        ticket = await self._write(work)
        self.ctx.pipeline.on_ticket_change()
        return _Json(ticket_json(ticket))

    async def ack_ticket(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        await _body(request, ())
        return await self._change_ticket(
            request,
            token,
            "acknowledge",
            {},
            lambda conn, tid, actor, now: tickets.acknowledge(conn, tid, actor=actor, now=now),
        )

    async def comment_ticket(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        text = _text(await _body(request, ("text",), ("text",)), "text")
        if not text.strip():
            raise ApiError(400, "field 'text' needs some text")
        return await self._change_ticket(
            request,
            token,
            "comment",
            {"text": text},
            lambda conn, tid, actor, now: tickets.comment(
                conn, tid, actor=actor, text=text, now=now
            ),
        )

    async def resolve_ticket(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        note = _optional_text(await _body(request, ("note",)), "note")
        return await self._change_ticket(
            request,
            token,
            "resolve",
            {"note": note},
            lambda conn, tid, actor, now: tickets.resolve(
                conn, tid, actor=actor, now=now, note=note or None
            ),
        )

    async def tier_ticket(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        tier = _integer(await _body(request, ("tier",), ("tier",)), "tier", 1, 3)
        return await self._change_ticket(
            request,
            token,
            "tier",
            {"tier": tier},
            lambda conn, tid, actor, now: tickets.reassign_tier(
                conn, tid, tier=tier, actor=actor, now=now
            ),
        )

    # -- agents -----------------------------------------------------------------------

    def _agent_json(self, agent: AgentRecord, *, detail: bool = False) -> dict[str, Any]:
        live = self.ctx.pipeline.state.agents.get(agent.agent_id)
        out: dict[str, Any] = {
            "agent_id": agent.agent_id,
            "customer": agent.customer,
            "hostname": agent.hostname,
            "site": agent.site,
            "tags": agent.tags,
            "created_at": agent.created_at,
            "last_seen_at": agent.last_seen_at,
            "revoked_at": agent.revoked_at,
            "up": live is not None and self.ctx.pipeline.is_up(live),
        }
        if detail:
            values = [] if live is None else sorted(live.latest())
            out["inventory"] = agent.inventory
            out["values"] = [
                {"metric": name, "labels": dict(labels), "value": value}
                for name, labels, value in values
            ]
        return out

    def _agent_id(self, request: Request) -> str:
        return _plain(request.path_params["agent_id"], "agent id", 64)

    async def _visible_agent(self, token: ApiToken, agent_id: str) -> AgentRecord:
        agent = await self._read(lambda conn: self.ctx.store.get_agent(agent_id, conn=conn))
        if agent is None or not token.allows(agent.customer):
            raise AgentNotFound(agent_id)
        return agent

    async def list_agents(self, request: Request) -> Response:
        token = await self._caller(request)
        params = _query(request, ("customer", "site", *PAGING))
        limit, offset = _paging(params)
        customer = params.get("customer")
        if customer is not None:
            self._scope_filter(token, _plain(customer, "customer"))
        site = _plain(params["site"], "site") if "site" in params else None
        agents = await self._read(lambda conn: self.ctx.store.list_agents(customer, conn=conn))
        visible = [
            a for a in agents if token.allows(a.customer) and (site is None or a.site == site)
        ]
        page = visible[offset : offset + limit + 1]
        return _Json(_page([self._agent_json(a) for a in page], limit, offset))

    async def show_agent(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        agent = await self._visible_agent(token, self._agent_id(request))
        return _Json(self._agent_json(agent, detail=True))

    async def revoke_agent(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        await _body(request, ())
        agent_id = self._agent_id(request)
        now = self.ctx.clock()
        store = self.ctx.store

        def work(conn: Connection) -> AgentRecord:
            agent = store.get_agent(agent_id, conn=conn)
            if agent is None or not token.allows(agent.customer):
                raise AgentNotFound(agent_id)
            if agent.revoked_at is None:
                store.revoke_agent(agent_id, now, conn=conn)
                apitokens.record(
                    conn,
                    actor=token.name,
                    action="agent.revoke",
                    target=f"agent/{agent_id}",
                    customer=agent.customer,
                    data={"hostname": agent.hostname},
                    now=now,
                )
            revoked = store.get_agent(agent_id, conn=conn)
            assert revoked is not None
            return revoked

        revoked = await self._write(work)
        await self.ctx.pipeline.retire(agent_id, now)
        return _Json(self._agent_json(revoked))

    # -- enrollment tokens ------------------------------------------------------------

    async def list_enrollment_tokens(self, request: Request) -> Response:
        token = await self._caller(request)
        params = _query(request, ("customer",))
        customer = params.get("customer")
        if customer is not None:
            self._scope_filter(token, _plain(customer, "customer"))
        rows = await self._read(
            lambda conn: self.ctx.store.list_enrollment_tokens(customer, conn=conn)
        )
        return _Json({"items": [_token_json(t) for t in rows if token.allows(t.customer)]})

    async def create_enrollment_token(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        data = await _body(request, ("customer", "expires_in"), ("customer",))
        customer = _text(data, "customer")
        try:
            apitokens.check_name(customer, "field 'customer'")
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        if not token.allows(customer):
            raise ApiError(403, f"this API token may not act for customer {customer!r}")
        expires_in = None
        if data.get("expires_in") is not None:
            expires_in = _integer(data, "expires_in", 1, MAX_EXPIRES_IN)
        now = self.ctx.clock()
        expires_at = None if expires_in is None else now + expires_in

        def work(conn: Connection) -> tuple[EnrollmentToken, str]:
            record, secret = self.ctx.store.create_enrollment_token(
                customer, now, expires_at, conn=conn
            )
            apitokens.record(
                conn,
                actor=token.name,
                action="enrollment_token.create",
                target=f"enrollment_token/{record.id}",
                customer=customer,
                data={"expires_at": expires_at},
                now=now,
            )
            return record, secret

        record, secret = await self._write(work)
        return _Json({**_token_json(record), "token": secret}, status_code=201)

    async def revoke_enrollment_token(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        await _body(request, ())
        token_id = _whole(request.path_params["token_id"], "enrollment token id", 1, MAX_ID)
        now = self.ctx.clock()
        store = self.ctx.store

        def work(conn: Connection) -> EnrollmentToken:
            found = [t for t in store.list_enrollment_tokens(conn=conn) if t.id == token_id]
            if not found or not token.allows(found[0].customer):
                raise EnrollmentTokenNotFound(token_id)
            if found[0].revoked_at is None:
                store.revoke_enrollment_token(token_id, now, conn=conn)
                apitokens.record(
                    conn,
                    actor=token.name,
                    action="enrollment_token.revoke",
                    target=f"enrollment_token/{token_id}",
                    customer=found[0].customer,
                    data={},
                    now=now,
                )
            return next(t for t in store.list_enrollment_tokens(conn=conn) if t.id == token_id)

        return _Json(_token_json(await self._write(work)))

    # -- rules and alerts -------------------------------------------------------------

    async def list_rules(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        rules = self.ctx.pipeline.rules
        return _Json({"source": rules.source, "items": [rule_json(r, token) for r in rules.rules]})

    async def list_alerts(self, request: Request) -> Response:
        token = await self._caller(request)
        params = _query(request, ("phase", "customer", "agent_id", "rule", *PAGING))
        limit, offset = _paging(params)
        phase = params.get("phase")
        if phase is not None:
            _choice(phase, "phase", ALERT_PHASES)
        customer = params.get("customer")
        if customer is not None:
            self._scope_filter(token, _plain(customer, "customer"))
        agent_id = _plain(params["agent_id"], "agent_id") if "agent_id" in params else None
        rule = _plain(params["rule"], "rule") if "rule" in params else None
        agents = self.ctx.pipeline.state.agents
        found = []
        # Copied first: the pipeline replaces an agent's states while this loop runs.
        for aid, states in list(self.ctx.pipeline.alert_states.items()):
            live = agents.get(aid)
            if live is None or not token.allows(live.customer):
                continue
            if (customer is not None and live.customer != customer) or (
                agent_id is not None and aid != agent_id
            ):
                continue
            for key, state in states.items():
                if (rule is not None and key.rule != rule) or (
                    phase is not None and state.phase != phase
                ):
                    continue
                found.append(
                    {
                        "agent_id": aid,
                        "customer": live.customer,
                        "hostname": live.hostname,
                        "rule": key.rule,
                        "labels": dict(key.labels),
                        "phase": state.phase,
                        "active_since": state.active_since,
                        "firing_since": state.firing_since,
                        "value": state.value,
                    }
                )
        found.sort(key=lambda a: (a["customer"], a["hostname"], a["agent_id"], a["rule"]))
        return _Json(_page(found[offset : offset + limit + 1], limit, offset))

    # -- maintenance windows ----------------------------------------------------------

    def _window_id(self, request: Request) -> int:
        return _whole(request.path_params["window_id"], "maintenance window id", 1, MAX_ID)

    @staticmethod
    def _visible_window(
        conn: Connection, token: ApiToken, window_id: int
    ) -> maintenance.MaintenanceWindow:
        """WindowNotFound when missing or outside the scope (a window without a customer
        spans customers, so only an all-customer token sees it)."""
        window = maintenance.get_window(conn, window_id)
        if token.customers is not None and (
            window.customer is None or not token.allows(window.customer)
        ):
            raise maintenance.WindowNotFound(window_id)
        return window

    @staticmethod
    def _scope_window_customer(token: ApiToken, customer: str | None) -> None:
        """403 unless the token may own a window for `customer` (None: every customer)."""
        if token.customers is None:
            return
        if customer is None:
            raise ApiError(
                403, "this API token is scoped to customers: field 'customer' must name one"
            )
        if not token.allows(customer):
            raise ApiError(403, f"this API token may not act for customer {customer!r}")

    @staticmethod
    def _window_json(window: maintenance.MaintenanceWindow, now: float) -> dict[str, Any]:
        return {**window.to_dict(), "status": window.status(now)}

    async def list_windows(self, request: Request) -> Response:
        token = await self._caller(request)
        params = _query(request, ("customer", *PAGING))
        limit, offset = _paging(params)
        customer = params.get("customer")
        if customer is not None:
            self._scope_filter(token, _plain(customer, "customer"))
        scope = token.customers if customer is None else (customer,)
        now = self.ctx.clock()

        def work(conn: Connection) -> list[dict[str, Any]]:
            windows = maintenance.list_windows(conn, customers=scope)
            return [self._window_json(w, now) for w in windows[offset : offset + limit + 1]]

        return _Json(_page(await self._read(work), limit, offset))

    async def show_window(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        window_id = self._window_id(request)
        now = self.ctx.clock()
        window = await self._read(lambda conn: self._visible_window(conn, token, window_id))
        return _Json(self._window_json(window, now))

    async def _write_window(
        self,
        token: ApiToken,
        action: str,
        data: dict[str, Any],
        change: Callable[[Connection], maintenance.MaintenanceWindow],
    ) -> maintenance.MaintenanceWindow:
        now = self.ctx.clock()

        def work(conn: Connection) -> maintenance.MaintenanceWindow:
            window = change(conn)
            apitokens.record(
                conn,
                actor=token.name,
                action=f"maintenance_window.{action}",
                target=f"maintenance_window/{window.id}",
                customer=window.customer,
                data=data,
                now=now,
            )
            return window

        window = await self._write(work)
        # The pipeline matches alerts against its cached windows: reload at the next tick.
        self.ctx.pipeline.windows.invalidate()
        return window

    async def create_window(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        data = _window_fields(await _body(request, WINDOW_FIELDS))
        self._scope_window_customer(token, data.get("customer"))
        now = self.ctx.clock()
        window = await self._write_window(
            token,
            "create",
            data,
            lambda conn: maintenance.create_window(conn, actor=token.name, now=now, **data),
        )
        return _Json(self._window_json(window, now), status_code=201)

    async def update_window(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        window_id = self._window_id(request)
        data = _window_fields(await _body(request, WINDOW_FIELDS))
        if "customer" in data:
            self._scope_window_customer(token, data["customer"])
        now = self.ctx.clock()

        def change(conn: Connection) -> maintenance.MaintenanceWindow:
            self._visible_window(conn, token, window_id)
            return maintenance.update_window(conn, window_id, actor=token.name, now=now, **data)

        window = await self._write_window(token, "update", data, change)
        return _Json(self._window_json(window, now))

    async def delete_window(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        await _body(request, ())
        window_id = self._window_id(request)
        now = self.ctx.clock()

        def change(conn: Connection) -> maintenance.MaintenanceWindow:
            self._visible_window(conn, token, window_id)
            return maintenance.delete_window(conn, window_id)

        window = await self._write_window(token, "delete", {}, change)
        return _Json(self._window_json(window, now))

    async def list_suppressed(self, request: Request) -> Response:
        token = await self._caller(request)
        params = _query(request, ("customer", "agent_id", "window_id", "limit", "before_id"))
        limit = _whole(params["limit"], "limit", 1, MAX_LIMIT) if "limit" in params else 100
        before_id = (
            _whole(params["before_id"], "before_id", 1, MAX_ID) if "before_id" in params else None
        )
        window_id = (
            _whole(params["window_id"], "window_id", 1, MAX_ID) if "window_id" in params else None
        )
        customer = params.get("customer")
        if customer is not None:
            self._scope_filter(token, _plain(customer, "customer"))
        agent_id = _plain(params["agent_id"], "agent_id") if "agent_id" in params else None
        scope = token.customers if customer is None else (customer,)
        rows = await self._read(
            lambda conn: suppression.list_suppressed(
                conn,
                customers=scope,
                agent_id=agent_id,
                window_id=window_id,
                limit=limit + 1,
                before_id=before_id,
            )
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return _Json(
            {
                "items": [r.to_dict() for r in rows],
                "next_before_id": rows[-1].id if more else None,
            }
        )

    # -- parked deliveries ------------------------------------------------------------

    async def list_parked(self, request: Request) -> Response:
        token = await self._caller(request)
        params = _query(request, ("route", "customer", *PAGING))
        limit, offset = _paging(params)
        route = _route_name(params["route"]) if "route" in params else None
        customer = params.get("customer")
        if customer is not None:
            self._scope_filter(token, _plain(customer, "customer"))
        scope = token.customers if customer is None else (customer,)
        rows = await self._read(
            lambda conn: delivery.list_parked(
                conn, route=route, customers=scope, limit=limit + 1, offset=offset
            )
        )
        return _Json(_page([r.to_dict() for r in rows], limit, offset))

    async def retry_parked(self, request: Request) -> Response:
        token = await self._caller(request)
        _query(request, ())
        await _body(request, ())
        route = _route_name(request.path_params["route"])
        event_id = _whole(request.path_params["event_id"], "event id", 1, MAX_ID)
        now = self.ctx.clock()

        def work(conn: Connection) -> delivery.ParkedEvent:
            parked = delivery.get_parked(conn, route, event_id)
            if not token.allows(parked.customer):  # answered as a missing one
                raise delivery.ParkedEventNotFound(route, event_id)
            delivery.unpark(conn, route, event_id)
            apitokens.record(
                conn,
                actor=token.name,
                action="delivery.retry",
                target=f"delivery/{route}/{event_id}",
                customer=parked.customer,
                data={"idempotency_key": parked.idempotency_key},
                now=now,
            )
            return parked

        parked = await self._write(work)
        self.ctx.pipeline.on_ticket_change()  # the route looks now, not at its next poll
        return _Json({**parked.to_dict(), "status": "pending"})

    async def openapi(self, request: Request) -> Response:
        return _Json(openapi_document())


async def unrouted(request: Request, exc: Exception) -> Response:
    """404 for the app the API is mounted in: JSON under API_PREFIX, else plain text."""
    if request.url.path.startswith(API_PREFIX + "/"):
        return _error(404, f"no such API path: {request.method} {request.url.path}")
    return PlainTextResponse("Not Found", status_code=404)


def build_api(ctx: ApiContext) -> Starlette:
    """The API as an app to mount at API_PREFIX."""
    h = _Handlers(ctx)
    routes = [
        Route("/openapi.json", h.openapi),
        Route("/tickets", h.list_tickets),
        Route("/tickets/{ticket_id}", h.show_ticket),
        Route("/tickets/{ticket_id}/ack", h.ack_ticket, methods=["POST"]),
        Route("/tickets/{ticket_id}/comment", h.comment_ticket, methods=["POST"]),
        Route("/tickets/{ticket_id}/resolve", h.resolve_ticket, methods=["POST"]),
        Route("/tickets/{ticket_id}/tier", h.tier_ticket, methods=["POST"]),
        Route("/agents", h.list_agents),
        Route("/agents/{agent_id}", h.show_agent),
        Route("/agents/{agent_id}/revoke", h.revoke_agent, methods=["POST"]),
        Route("/enrollment-tokens", h.list_enrollment_tokens),
        Route("/enrollment-tokens", h.create_enrollment_token, methods=["POST"]),
        Route("/enrollment-tokens/{token_id}/revoke", h.revoke_enrollment_token, methods=["POST"]),
        Route("/rules", h.list_rules),
        Route("/alerts", h.list_alerts),
        Route("/maintenance-windows", h.list_windows),
        Route("/maintenance-windows", h.create_window, methods=["POST"]),
        Route("/maintenance-windows/{window_id}", h.show_window),
        Route("/maintenance-windows/{window_id}", h.update_window, methods=["PUT"]),
        Route("/maintenance-windows/{window_id}", h.delete_window, methods=["DELETE"]),
        Route("/suppressed-alerts", h.list_suppressed),
        Route("/deliveries/parked", h.list_parked),
        Route("/deliveries/parked/{route}/{event_id}/retry", h.retry_parked, methods=["POST"]),
    ]

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.message, exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "no such API path", 405: "method not allowed here"}.get(
            exc.status_code, exc.detail
        )
        return _error(
            exc.status_code, f"{message}: {request.method} {request.url.path}", exc.headers
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, str(exc))

    async def bad_window(request: Request, exc: Exception) -> Response:
        return _error(400, str(exc))

    async def conflict(request: Request, exc: Exception) -> Response:
        return _error(409, str(exc))

    async def unavailable(request: Request, exc: Exception) -> Response:
        return _error(503, "the store is unavailable; retry later", {"Retry-After": "5"})

    return Starlette(
        routes=routes,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            tickets.TicketNotFound: not_found,
            AgentNotFound: not_found,
            EnrollmentTokenNotFound: not_found,
            maintenance.WindowNotFound: not_found,
            delivery.ParkedEventNotFound: not_found,
            maintenance.InvalidWindow: bad_window,
            tickets.InvalidTicketTransition: conflict,
            StoreUnavailable: unavailable,
        },
    )
