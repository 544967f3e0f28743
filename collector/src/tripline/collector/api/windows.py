"""/maintenance-windows (list, show, create, update, delete) and /suppressed-alerts (what
the windows held back)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection
from starlette.responses import Response

from tripline.collector import apitokens, maintenance, suppression
from tripline.collector.api.auth import act_for, scope
from tripline.collector.api.body import Body, Field, SecondsField, TextField
from tripline.collector.api.encoding import Json
from tripline.collector.api.errors import ApiError
from tripline.collector.api.jsonschema import obj, or_null, page_of, ref
from tripline.collector.api.params import (
    CUSTOMER,
    LIMIT,
    MAX_FILTER,
    MAX_ID,
    MAX_TIME,
    MAX_WINDOW_DURATION,
    PAGING,
    Text,
    Whole,
    page,
    path_id,
)
from tripline.collector.api.routing import Call, operation
from tripline.collector.apitokens import ApiToken

WINDOW_ID = path_id("window_id", "maintenance window id")


def _scope_field(max_length: int, about: str) -> TextField:
    return TextField(
        nullable=True,
        max_length=max_length,
        blank="field {key!r} must be a non-empty name or null",
        strip=True,
        description=about,
    )


def _schedule_text(about: str) -> TextField:
    return TextField(nullable=True, max_length=MAX_FILTER, description=about)


def _unix_time() -> SecondsField:
    return SecondsField(
        high=MAX_TIME,
        nullable=True,
        meaning="unix seconds from 0",
        description="one-time window: unix seconds",
    )


# The window's fields as the body takes them; `collector.maintenance` checks what they
# mean together (one schedule, some scope).
WINDOW_FIELDS: dict[str, Field] = {
    "customer": _scope_field(
        MAX_FILTER, "scope: this customer (a scoped token must name one of its)"
    ),
    "site": _scope_field(MAX_FILTER, "scope: this site"),
    "agent_id": _scope_field(64, "scope: this agent"),
    "rule": _scope_field(MAX_FILTER, "scope: this rule"),
    "starts_at": _unix_time(),
    "ends_at": _unix_time(),
    "weekly": _schedule_text("recurring: e.g. 'Mon-Fri 18:00-08:00'"),
    "cron": _schedule_text("recurring starts, e.g. '0 2 * * Sun'"),
    "duration": SecondsField(
        high=MAX_WINDOW_DURATION,
        above=True,
        nullable=True,
        meaning="seconds above 0",
        description="with cron: each window's length",
    ),
    "timezone": _schedule_text("IANA name for weekly and cron, default UTC"),
    "comment": TextField(nullable=True, null_as=""),
}
assert set(WINDOW_FIELDS) == {*maintenance.SCOPE_FIELDS, *maintenance.SCHEDULE_FIELDS, "comment"}


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


def _scope_window_customer(token: ApiToken, customer: str | None) -> None:
    """403 unless the token may own a window for `customer` (None: every customer)."""
    if token.customers is None:
        return
    if customer is None:
        raise ApiError(403, "this API token is scoped to customers: field 'customer' must name one")
    act_for(token, customer)


def window_json(window: maintenance.MaintenanceWindow, now: float) -> dict[str, Any]:
    return {**window.to_dict(), "status": window.status(now)}


@operation(
    "GET",
    "/maintenance-windows",
    "listMaintenanceWindows",
    "Maintenance windows by id (a scoped token sees its customers' only)",
    ref("MaintenanceWindowPage"),
    query=(*PAGING, CUSTOMER),
    errors=(403,),
)
async def list_windows(call: Call) -> Response:
    limit, offset = call.query["limit"], call.query["offset"]
    customers = scope(call.token, call.query["customer"])
    now = call.ctx.clock()

    def work(conn: Connection) -> list[dict[str, Any]]:
        windows = maintenance.list_windows(conn, customers=customers)
        return [window_json(w, now) for w in windows[offset : offset + limit + 1]]

    return Json(page(await call.ctx.read(work), limit, offset))


WINDOW = ref("MaintenanceWindow")


@operation(
    "GET",
    "/maintenance-windows/{window_id}",
    "showMaintenanceWindow",
    "A maintenance window",
    WINDOW,
    path_params=(WINDOW_ID,),
    errors=(404,),
)
async def show_window(call: Call) -> Response:
    window_id = call.path("window_id")
    now = call.ctx.clock()
    window = await call.ctx.read(lambda conn: _visible_window(conn, call.token, window_id))
    return Json(window_json(window, now))


async def _write_window(
    call: Call,
    action: str,
    data: dict[str, Any],
    change: Callable[[Connection], maintenance.MaintenanceWindow],
) -> maintenance.MaintenanceWindow:
    """Apply `change` with its audit row in one transaction."""
    token = call.token
    now = call.ctx.clock()

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

    window = await call.ctx.write(work)
    # The pipeline matches alerts against its cached windows: reload at the next tick.
    call.ctx.pipeline.windows.invalidate()
    return window


@operation(
    "POST",
    "/maintenance-windows",
    "createMaintenanceWindow",
    "A new window: some scope (customer, site, agent_id, rule; all given must "
    "match) and one schedule (starts_at and ends_at; weekly; or cron with "
    "duration). Matching alerts open no ticket while it is active.",
    WINDOW,
    status=201,
    body=Body(WINDOW_FIELDS, needed=True),
    errors=(403,),
)
async def create_window(call: Call) -> Response:
    token = call.token
    data = await call.body()
    _scope_window_customer(token, data.get("customer"))
    now = call.ctx.clock()
    window = await _write_window(
        call,
        "create",
        data,
        lambda conn: maintenance.create_window(conn, actor=token.name, now=now, **data),
    )
    return Json(window_json(window, now), status_code=201)


@operation(
    "PUT",
    "/maintenance-windows/{window_id}",
    "updateMaintenanceWindow",
    "Change the fields given; schedule fields given replace the whole schedule",
    WINDOW,
    path_params=(WINDOW_ID,),
    body=Body(WINDOW_FIELDS),
    errors=(403, 404),
)
async def update_window(call: Call) -> Response:
    token = call.token
    window_id = call.path("window_id")
    data = await call.body()
    if "customer" in data:
        _scope_window_customer(token, data["customer"])
    now = call.ctx.clock()

    def change(conn: Connection) -> maintenance.MaintenanceWindow:
        _visible_window(conn, token, window_id)
        return maintenance.update_window(conn, window_id, actor=token.name, now=now, **data)

    window = await _write_window(call, "update", data, change)
    return Json(window_json(window, now))


@operation(
    "DELETE",
    "/maintenance-windows/{window_id}",
    "deleteMaintenanceWindow",
    "Delete a window; alerts it held back open their tickets at the next check",
    WINDOW,
    path_params=(WINDOW_ID,),
    body=Body(),
    errors=(404,),
)
async def delete_window(call: Call) -> Response:
    await call.body()
    window_id = call.path("window_id")
    now = call.ctx.clock()

    def change(conn: Connection) -> maintenance.MaintenanceWindow:
        _visible_window(conn, call.token, window_id)
        return maintenance.delete_window(conn, window_id)

    window = await _write_window(call, "delete", {}, change)
    return Json(window_json(window, now))


@operation(
    "GET",
    "/suppressed-alerts",
    "listSuppressedAlerts",
    "Alerts maintenance windows held back, newest first",
    ref("SuppressedAlertPage"),
    query=(
        LIMIT,
        Whole(name="before_id", low=1, high=MAX_ID, description="the last id of the previous page"),
        Whole(name="window_id", low=1, high=MAX_ID),
        CUSTOMER,
        Text(name="agent_id"),
    ),
    errors=(403,),
)
async def list_suppressed(call: Call) -> Response:
    q = call.query
    limit = q["limit"]
    customers = scope(call.token, q["customer"])
    rows = await call.ctx.read(
        lambda conn: suppression.list_suppressed(
            conn,
            customers=customers,
            agent_id=q["agent_id"],
            window_id=q["window_id"],
            limit=limit + 1,
            before_id=q["before_id"],
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Json(
        {"items": [r.to_dict() for r in rows], "next_before_id": rows[-1].id if more else None}
    )


OPERATIONS = (
    list_windows,
    create_window,
    show_window,
    update_window,
    delete_window,
    list_suppressed,
)


def _schemas() -> dict[str, Any]:
    number = {"type": "number"}
    text = {"type": "string"}
    when = or_null("number")
    maybe_text = or_null("string")
    window = obj(
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
    suppressed = obj(
        ("id", "window_id", "customer", "agent_id", "rule", "labels", "suppressed_at"),
        id={"type": "integer"},
        window_id={"type": "integer"},
        customer=text,
        agent_id=text,
        hostname=text,
        rule=text,
        labels={"type": "object", "additionalProperties": {"type": "string"}},
        value=number,
        severity=text,
        tier={"type": "integer"},
        summary=text,
        runbook=maybe_text,
        threshold=when,
        suppressed_at=number,
        cleared_at=when,
        released_at={**when, "description": "when it outlived its windows and opened a ticket"},
        ticket_id=or_null("integer"),
    )
    return {
        "MaintenanceWindow": window,
        "MaintenanceWindowPage": page_of("MaintenanceWindow"),
        "SuppressedAlert": suppressed,
        "SuppressedAlertPage": obj(
            ("items", "next_before_id"),
            items={"type": "array", "items": ref("SuppressedAlert")},
            next_before_id={
                **or_null("integer"),
                "description": "pass as before_id for the next (older) page, if any",
            },
        ),
    }


SCHEMAS = _schemas()
