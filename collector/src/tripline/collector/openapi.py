"""The OpenAPI document of the HTTP API (`collector.api`), and the input limits both share.

Written by hand next to the handlers it describes: pure data and the builders that make
it. tests/integration/test_api_schemathesis.py checks every answer of the API against it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tripline.alerts.model import SEVERITIES
from tripline.collector.schema import TICKET_STATUSES

API_PREFIX = "/api/v1"
# Fits any body the document allows: 10,000 characters escaped as JSON take up to 120 kB.
MAX_BODY_BYTES = 256 * 1024
MAX_TEXT = 10_000
MAX_FILTER = 256
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000
MAX_ID = 2**63 - 1
MAX_EXPIRES_IN = 10 * 365 * 86400
# Unix seconds up to the end of the year 9999, the last one datetime can show.
MAX_TIME = 253_402_300_799
# A recurring window's length: the calendar looks back this far for a covering occurrence.
MAX_WINDOW_DURATION = 31 * 86400
ALERT_PHASES = ("pending", "firing")

_NO_NUL = "^[^\\u0000]*$"
# A name as apitokens.check_name takes it: no control characters (C0, DEL, C1) and none of
# the other characters str.strip() removes at either end. Spelled out rather than \\s,
# whose meaning differs between regex dialects.
_CONTROL = "\\u0000-\\u001f\\u007f-\\u009f"
_SPACE = " \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
_NAME = f"^[^{_CONTROL}{_SPACE}](?:[^{_CONTROL}]*[^{_CONTROL}{_SPACE}])?$"
# some text: a character that is neither NUL nor whitespace to str.strip()
_ALL_SPACE = f"\\t-\\r\\u001c-\\u001f\\u0085{_SPACE}"
_TEXT = f"^[^\\u0000]*[^\\u0000{_ALL_SPACE}][^\\u0000]*$"
_ERROR_TEXT = {
    "400": "Bad input: the error says which parameter or field and why.",
    "401": "No API token, or an unknown or revoked one.",
    "403": "The request names a customer outside the token's scope.",
    "404": "No such object, or it belongs to a customer outside the token's scope.",
    "409": "The ticket is not in a state that allows this change.",
    "413": "The request body is too large.",
    "429": "Asked again too soon; retry after the Retry-After seconds.",
    "504": "The agent has no open stream to this collector, or did not answer in time.",
    "503": "The store is unavailable; retry after the Retry-After seconds.",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _or_null(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def _object(required: Collection[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


def _strict(required: Collection[str] = (), **properties: Any) -> dict[str, Any]:
    return {**_object(required, **properties), "additionalProperties": False}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _page_of(name: str) -> dict[str, Any]:
    return _object(
        ("items", "next_offset"),
        items={"type": "array", "items": _ref(name)},
        next_offset={**_or_null("integer"), "description": "offset of the next page, if any"},
    )


def _param(name: str, where: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": text,
    }


_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_FILTER = {"type": "string", "maxLength": MAX_FILTER, "pattern": _NO_NUL}
_TICKET_ID = _param("ticket_id", "path", _ID, "ticket id")
_AGENT_ID = _param(
    "agent_id",
    "path",
    {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^/\\u0000]+$"},
    "agent id",
)
_CUSTOMER = _param("customer", "query", _FILTER, "only this customer (inside the scope)")
_PAGING = [
    _param(
        "limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "default 100"
    ),
    _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, ""),
]


def _op(
    op_id: str,
    summary: str,
    ok: dict[str, Any],
    *,
    ok_status: str = "200",
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    body_required: bool = False,
    errors: tuple[str, ...] = (),
) -> dict[str, Any]:
    responses = {ok_status: {"description": "OK", **_json(ok)}}
    for status in ("400", "401", *errors, *(("413",) if body else ()), "503"):
        responses[status] = {"description": _ERROR_TEXT[status], **_json(_ref("Error"))}
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "parameters": params or [],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": body_required, **_json(body)}
    return op


def _schemas() -> dict[str, Any]:
    number = {"type": "number"}
    text = {"type": "string"}
    when = _or_null("number")
    labels = {"type": "object", "additionalProperties": {"type": "string"}}
    ticket = _object(
        ("id", "customer", "agent_id", "hostname", "rule", "labels", "status", "severity"),
        id={"type": "integer"},
        problem_key=text,
        customer=text,
        agent_id=text,
        hostname=text,
        rule=text,
        labels=labels,
        status={"enum": list(TICKET_STATUSES)},
        severity=text,
        tier={"type": "integer", "minimum": 1, "maximum": 3},
        summary=text,
        runbook=_or_null("string"),
        value=_or_null("number"),
        threshold=_or_null("number"),
        context={"type": "object"},
        opened_at=number,
        tier_since=number,
        acknowledged_at=when,
        acknowledged_by=_or_null("string"),
        resolved_at=when,
        resolved_by=_or_null("string"),
        resolved_value=_or_null("number"),
        resolve_reason=_or_null("string"),
        reopen_count={"type": "integer"},
        flapping={"type": "boolean"},
        updated_at=number,
        event_seq={"type": "integer"},
    )
    event = _object(
        ("seq", "at", "kind", "actor", "message", "data"),
        seq={"type": "integer"},
        at=number,
        kind=text,
        actor={**text, "description": "'tripline' for the engine, else the API token's name"},
        message=text,
        data={"type": "object"},
    )
    agent = _object(
        ("agent_id", "customer", "hostname", "site", "up"),
        agent_id=text,
        customer=text,
        hostname=text,
        site=text,
        tags={"type": "object"},
        created_at=number,
        last_seen_at=when,
        revoked_at=when,
        up={"type": "boolean"},
    )
    value = _object(("metric", "labels", "value"), metric=text, labels=labels, value=when)
    enrollment = _object(
        ("id", "customer", "created_at"),
        id={"type": "integer"},
        customer=text,
        created_at=number,
        expires_at=when,
        revoked_at=when,
    )
    rule = _object(
        ("name", "metric", "op", "threshold", "for", "severity", "tier"),
        name=text,
        metric=text,
        match={"type": "array", "items": {"type": "object"}},
        op=text,
        threshold=number,
        clear={"type": "object"},
        window={"type": ["object", "null"]},
        severity=text,
        tier={"type": "integer"},
        summary=text,
        runbook=text,
        builtin=_or_null("string"),
        overrides={"type": "object", "description": "per customer, inside the token's scope"},
        **{"for": {**number, "description": "seconds the condition must hold"}},
    )
    alert = _object(
        ("agent_id", "customer", "rule", "labels", "phase"),
        agent_id=text,
        customer=text,
        hostname=text,
        rule=text,
        labels=labels,
        phase={"enum": list(ALERT_PHASES)},
        active_since=number,
        firing_since=when,
        value=when,
    )
    maybe_text = _or_null("string")
    window = _object(
        (
            "id",
            "customer",
            "site",
            "agent_id",
            "rule",
            "kind",
            "comment",
            "created_at",
            "created_by",
            "updated_at",
            "status",
        ),
        id={"type": "integer"},
        customer=maybe_text,
        site=maybe_text,
        agent_id=maybe_text,
        rule=maybe_text,
        kind={"enum": ["once", "weekly", "cron"]},
        starts_at=when,
        ends_at=when,
        weekly=maybe_text,
        cron=maybe_text,
        duration=when,
        timezone=maybe_text,
        comment=text,
        created_at=number,
        created_by=text,
        updated_at=number,
        status={"enum": ["active", "scheduled", "ended"]},
    )
    suppressed = _object(
        ("id", "window_id", "customer", "agent_id", "rule", "labels", "suppressed_at"),
        id={"type": "integer"},
        window_id={"type": "integer"},
        customer=text,
        agent_id=text,
        hostname=text,
        rule=text,
        labels=labels,
        value=number,
        severity=text,
        tier={"type": "integer"},
        summary=text,
        runbook=maybe_text,
        threshold=when,
        suppressed_at=number,
        cleared_at=when,
        released_at={**when, "description": "when it outlived its windows and opened a ticket"},
        ticket_id=_or_null("integer"),
    )
    return {
        "Error": _object(("error",), error=text),
        "Ticket": ticket,
        "TicketEvent": event,
        "TicketDetail": {
            "allOf": [
                _ref("Ticket"),
                _object(("events",), events={"type": "array", "items": _ref("TicketEvent")}),
                _object(
                    (),
                    snapshot={
                        **_or_null("object"),
                        "description": "what the agent saw while the problem held "
                        "(top_cpu, top_memory, filesystems, logged_in_users, uptime_seconds...)",
                    },
                    snapshot_taken_at={
                        **_or_null("number"),
                        "description": "when the collector received it",
                    },
                    previously={
                        **_or_null("object"),
                        "description": "scope (agent, customer or null) and the last tickets "
                        "of this rule there: resolved_by, auto_resolved, note, took_seconds",
                    },
                ),
            ]
        },
        "AgentSnapshot": _object(
            ("agent_id", "hostname", "request_id", "taken_at", "snapshot"),
            agent_id=text,
            hostname=text,
            request_id=text,
            taken_at={**number, "description": "when the collector received it"},
            snapshot={"type": "object"},
        ),
        "TicketPage": _page_of("Ticket"),
        "Agent": agent,
        "AgentDetail": {
            "allOf": [
                _ref("Agent"),
                _object(
                    ("inventory", "values"),
                    inventory={"type": "object"},
                    values={"type": "array", "items": value},
                ),
            ]
        },
        "AgentPage": _page_of("Agent"),
        "EnrollmentToken": enrollment,
        "EnrollmentTokenCreated": {
            "allOf": [
                _ref("EnrollmentToken"),
                _object(("token",), token={**text, "description": "the secret, shown once"}),
            ]
        },
        "Rule": rule,
        "Alert": alert,
        "AlertPage": _page_of("Alert"),
        "MaintenanceWindow": window,
        "MaintenanceWindowPage": _page_of("MaintenanceWindow"),
        "SuppressedAlert": suppressed,
        "SuppressedAlertPage": _object(
            ("items", "next_before_id"),
            items={"type": "array", "items": _ref("SuppressedAlert")},
            next_before_id={
                **_or_null("integer"),
                "description": "pass as before_id for the next (older) page, if any",
            },
        ),
    }


def openapi_document() -> dict[str, Any]:
    no_body = _strict()
    ticket_filters = [
        _param("status", "query", {"enum": list(TICKET_STATUSES)}, ""),
        _CUSTOMER,
        _param("severity", "query", {"enum": list(SEVERITIES)}, ""),
        _param("tier", "query", {"type": "integer", "minimum": 1, "maximum": 3}, ""),
        _param("agent_id", "query", _FILTER, ""),
        *_PAGING,
    ]
    ticket = _ref("TicketDetail")
    paths: dict[str, Any] = {
        "/tickets": {
            "get": _op(
                "listTickets",
                "Tickets, newest first, without timelines",
                _ref("TicketPage"),
                params=ticket_filters,
                errors=("403",),
            )
        },
        "/tickets/{ticket_id}": {
            "get": _op(
                "showTicket",
                "A ticket with its timeline",
                ticket,
                params=[_TICKET_ID],
                errors=("404",),
            )
        },
        "/tickets/{ticket_id}/ack": {
            "post": _op(
                "acknowledgeTicket",
                "Acknowledge: stops escalation",
                ticket,
                params=[_TICKET_ID],
                body=no_body,
                errors=("404", "409"),
            )
        },
        "/tickets/{ticket_id}/comment": {
            "post": _op(
                "commentTicket",
                "Add a comment to the timeline",
                ticket,
                params=[_TICKET_ID],
                body=_strict(
                    ("text",),
                    text={
                        "type": "string",
                        "maxLength": MAX_TEXT,
                        "pattern": _TEXT,
                    },
                ),
                body_required=True,
                errors=("404",),
            )
        },
        "/tickets/{ticket_id}/resolve": {
            "post": _op(
                "resolveTicket",
                "Resolve, with an optional note",
                ticket,
                params=[_TICKET_ID],
                body=_strict(
                    note={"type": ["string", "null"], "maxLength": MAX_TEXT, "pattern": _NO_NUL}
                ),
                errors=("404", "409"),
            )
        },
        "/tickets/{ticket_id}/tier": {
            "post": _op(
                "reassignTicketTier",
                "Move an unresolved ticket to another tier; its escalation clock restarts",
                ticket,
                params=[_TICKET_ID],
                body=_strict(("tier",), tier={"type": "integer", "minimum": 1, "maximum": 3}),
                body_required=True,
                errors=("404", "409"),
            )
        },
        "/agents": {
            "get": _op(
                "listAgents",
                "Enrolled agents",
                _ref("AgentPage"),
                params=[_CUSTOMER, _param("site", "query", _FILTER, ""), *_PAGING],
                errors=("403",),
            )
        },
        "/agents/{agent_id}": {
            "get": _op(
                "showAgent",
                "An agent with its inventory and latest values",
                _ref("AgentDetail"),
                params=[_AGENT_ID],
                errors=("404",),
            )
        },
        "/agents/{agent_id}/revoke": {
            "post": _op(
                "revokeAgent",
                "Revoke the agent's credential; it is refused on its next message",
                _ref("Agent"),
                params=[_AGENT_ID],
                body=no_body,
                errors=("404",),
            )
        },
        "/agents/{agent_id}/snapshot": {
            "post": _op(
                "snapshotAgent",
                "Ask the agent now for a diagnostic snapshot (processes, disks, users); "
                "waits up to snapshot_timeout",
                _ref("AgentSnapshot"),
                params=[_AGENT_ID],
                body=no_body,
                errors=("404", "409", "429", "504"),
            )
        },
        "/enrollment-tokens": {
            "get": _op(
                "listEnrollmentTokens",
                "Enrollment tokens (never their secrets)",
                _object(("items",), items={"type": "array", "items": _ref("EnrollmentToken")}),
                params=[_CUSTOMER],
                errors=("403",),
            ),
            "post": _op(
                "createEnrollmentToken",
                "A new enrollment token; the secret is in the answer, once",
                _ref("EnrollmentTokenCreated"),
                ok_status="201",
                body=_strict(
                    ("customer",),
                    customer={"type": "string", "maxLength": 128, "pattern": _NAME},
                    expires_in={
                        "type": ["integer", "null"],
                        "minimum": 1,
                        "maximum": MAX_EXPIRES_IN,
                        "description": "seconds until it expires; none: never",
                    },
                ),
                body_required=True,
                errors=("403",),
            ),
        },
        "/enrollment-tokens/{token_id}/revoke": {
            "post": _op(
                "revokeEnrollmentToken",
                "Revoke an enrollment token; enrolled agents keep working",
                _ref("EnrollmentToken"),
                params=[_param("token_id", "path", _ID, "enrollment token id")],
                body=no_body,
                errors=("404",),
            )
        },
        "/rules": {
            "get": _op(
                "listRules",
                "The rules loaded",
                _object(
                    ("source", "items"),
                    source={"type": "string"},
                    items={"type": "array", "items": _ref("Rule")},
                ),
            )
        },
        "/alerts": {
            "get": _op(
                "listAlerts",
                "Alerts pending (waiting out their 'for') and firing",
                _ref("AlertPage"),
                params=[
                    _param("phase", "query", {"enum": list(ALERT_PHASES)}, ""),
                    _CUSTOMER,
                    _param("agent_id", "query", _FILTER, ""),
                    _param("rule", "query", _FILTER, ""),
                    *_PAGING,
                ],
                errors=("403",),
            )
        },
    }
    paths.update(_maintenance_paths())
    paths.update(_delivery_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tripline collector API", "version": "1"},
        "servers": [{"url": API_PREFIX}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**_schemas(), **_delivery_schemas()},
        },
    }


def _window_body() -> dict[str, Any]:
    def name(max_length: int, about: str) -> dict[str, Any]:
        return {
            "type": ["string", "null"],
            "maxLength": max_length,
            "pattern": _TEXT,
            "description": about,
        }

    def seconds(maximum: float, about: str, **bound: Any) -> dict[str, Any]:
        return {"type": ["number", "null"], "maximum": maximum, **bound, "description": about}

    return _strict(
        customer=name(MAX_FILTER, "scope: this customer (a scoped token must name one of its)"),
        site=name(MAX_FILTER, "scope: this site"),
        agent_id=name(64, "scope: this agent"),
        rule=name(MAX_FILTER, "scope: this rule"),
        starts_at=seconds(MAX_TIME, "one-time window: unix seconds", minimum=0),
        ends_at=seconds(MAX_TIME, "one-time window: unix seconds", minimum=0),
        weekly={**name(MAX_FILTER, "recurring: e.g. 'Mon-Fri 18:00-08:00'"), "pattern": _NO_NUL},
        cron={**name(MAX_FILTER, "recurring starts, e.g. '0 2 * * Sun'"), "pattern": _NO_NUL},
        duration=seconds(
            MAX_WINDOW_DURATION, "with cron: each window's length", exclusiveMinimum=0
        ),
        timezone={
            **name(MAX_FILTER, "IANA name for weekly and cron, default UTC"),
            "pattern": _NO_NUL,
        },
        comment={"type": ["string", "null"], "maxLength": MAX_TEXT, "pattern": _NO_NUL},
    )


def _maintenance_paths() -> dict[str, Any]:
    window_id = _param("window_id", "path", _ID, "maintenance window id")
    window = _ref("MaintenanceWindow")
    return {
        "/maintenance-windows": {
            "get": _op(
                "listMaintenanceWindows",
                "Maintenance windows by id (a scoped token sees its customers' only)",
                _ref("MaintenanceWindowPage"),
                params=[_CUSTOMER, *_PAGING],
                errors=("403",),
            ),
            "post": _op(
                "createMaintenanceWindow",
                "A new window: some scope (customer, site, agent_id, rule; all given must "
                "match) and one schedule (starts_at and ends_at; weekly; or cron with "
                "duration). Matching alerts open no ticket while it is active.",
                window,
                ok_status="201",
                body=_window_body(),
                body_required=True,
                errors=("403",),
            ),
        },
        "/maintenance-windows/{window_id}": {
            "get": _op(
                "showMaintenanceWindow",
                "A maintenance window",
                window,
                params=[window_id],
                errors=("404",),
            ),
            "put": _op(
                "updateMaintenanceWindow",
                "Change the fields given; schedule fields given replace the whole schedule",
                window,
                params=[window_id],
                body=_window_body(),
                errors=("403", "404"),
            ),
            "delete": _op(
                "deleteMaintenanceWindow",
                "Delete a window; alerts it held back open their tickets at the next check",
                window,
                params=[window_id],
                body=_strict(),
                errors=("404",),
            ),
        },
        "/suppressed-alerts": {
            "get": _op(
                "listSuppressedAlerts",
                "Alerts maintenance windows held back, newest first",
                _ref("SuppressedAlertPage"),
                params=[
                    _CUSTOMER,
                    _param("agent_id", "query", _FILTER, ""),
                    _param("window_id", "query", _ID, ""),
                    _PAGING[0],
                    _param("before_id", "query", _ID, "the last id of the previous page"),
                ],
                errors=("403",),
            )
        },
    }


_ROUTE = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": _NO_NUL}


def _delivery_schemas() -> dict[str, Any]:
    parked = _object(
        (
            "route",
            "event_id",
            "ticket_id",
            "seq",
            "kind",
            "customer",
            "idempotency_key",
            "attempts",
            "parked_at",
            "error",
        ),
        route={"type": "string"},
        event_id={"type": "integer"},
        ticket_id={"type": "integer"},
        seq={"type": "integer"},
        kind={"type": "string"},
        customer={"type": "string"},
        idempotency_key={"type": "string"},
        attempts={"type": "integer"},
        parked_at={"type": "number"},
        error={"type": "string"},
    )
    return {
        "ParkedDelivery": parked,
        "ParkedDeliveryPage": _page_of("ParkedDelivery"),
        "ParkedDeliveryRetried": {
            "allOf": [parked, _object(("status",), status={"const": "pending"})]
        },
    }


def _delivery_paths() -> dict[str, Any]:
    return {
        "/deliveries/parked": {
            "get": _op(
                "listParkedDeliveries",
                "Ticket events a route gave up on after its retries, oldest first",
                _ref("ParkedDeliveryPage"),
                params=[_param("route", "query", _ROUTE, ""), _CUSTOMER, *_PAGING],
                errors=("403",),
            )
        },
        "/deliveries/parked/{route}/{event_id}/retry": {
            "post": _op(
                "retryParkedDelivery",
                "Make a parked event pending again: its route sends it next",
                _ref("ParkedDeliveryRetried"),
                params=[
                    _param("route", "path", _ROUTE, "route name"),
                    _param("event_id", "path", _ID, "ticket event id"),
                ],
                body=_strict(),
                errors=("404",),
            )
        },
    }
