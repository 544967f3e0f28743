"""/reports/{customer}: the service report (`tripline.collector.report`) over HTTP.

Scoped like tickets: a token sees reports of its customers only; another customer's
report answers 404 exactly as an unknown customer does, so nothing tells it exists.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from starlette.responses import Response

from tripline.collector import report
from tripline.collector.api.errors import ApiError
from tripline.collector.api.params import Choice, Param, Text
from tripline.collector.api.routing import Call, operation
from tripline.collector.apitokens import ApiToken

log = logging.getLogger(__name__)

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, kw_only=True)
class Day(Param):
    """A calendar day, YYYY-MM-DD (UTC); whether it exists and the period's span are
    judged by `report.parse_period`, which names the field at fault."""

    required: bool = True

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{_DATE.pattern}$"}

    def parse(self, text: str, token: ApiToken) -> str:
        if not _DATE.fullmatch(text):
            raise ApiError(400, f"field {self.name!r} (query): give a date as YYYY-MM-DD")
        return text


_CUSTOMER = Text(name="customer", where="path", min_length=1, description="customer name")
_FROM = Day(name="from", description="first day, UTC")
_TO = Day(name="to", description="first day not included, UTC")
_FORMAT = Choice(
    name="format", choices=report.FORMATS, description="default html"
)  # html, json, csv


@operation(
    "GET",
    "/reports/{customer}",
    "showReport",
    "A customer's service report for a period (docs/reports.md)",
    {"type": "object"},
    path_params=(_CUSTOMER,),
    query=(_FROM, _TO, _FORMAT),
    errors=(404,),
    media=("text/html", "text/csv"),
    refused=lambda ctx: ctx.pipeline.metrics.service_reports.labels("-", "refused").inc(),
)
async def show_report(call: Call) -> Response:
    metrics = call.ctx.pipeline.metrics.service_reports
    try:
        response = await _show_report(call)
    except ApiError:
        raise  # counted as refused by the operation
    except Exception:
        metrics.labels("-", "failed").inc()
        raise  # answered 500 (or 503) and logged with its traceback by the server
    metrics.labels(call.query["format"] or "html", "served").inc()
    return response


async def _show_report(call: Call) -> Response:
    customer: str = call.path("customer")
    fmt: str = call.query["format"] or "html"
    try:
        period = report.parse_period(call.query["from"], call.query["to"])
    except report.ReportPeriodError as exc:
        raise ApiError(400, f"field {exc.field!r} (query): {exc}") from None
    token, pipeline = call.token, call.ctx.pipeline
    memory_rules = report.memory_rule_names(pipeline.rules)
    now = call.ctx.clock()

    def work(conn: Connection) -> report.Report | None:
        if not token.allows(customer) or not report.customer_known(conn, customer):
            return None
        return report.build_report(
            conn, customer, period, memory_rules=memory_rules, gap=pipeline.offline_after, now=now
        )

    built = await call.ctx.read(work)
    if built is None:
        raise ApiError(404, f"no customer {customer!r}")
    body = report.render(built, fmt)
    log.info(
        "service report served", extra={"customer": customer, "format": fmt, "actor": token.name}
    )
    headers = {
        # The page needs nothing from anywhere: say so to the browser, too.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        "X-Content-Type-Options": "nosniff",
    }
    if fmt != "html":
        name = f"tripline-report-{period.first}-{period.until}.{fmt}"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(body, media_type=report.MEDIA_TYPES[fmt], headers=headers)


OPERATIONS = (show_report,)
SCHEMAS: dict[str, Any] = {}
