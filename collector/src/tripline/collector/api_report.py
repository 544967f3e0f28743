"""GET /api/v1/reports/{customer}: the service report (collector.report) over HTTP.

Scoped like tickets: a token sees reports of its customers only; another customer's
report answers 404 exactly as an unknown customer does, so nothing tells it exists.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripline.collector import report
from tripline.collector.api import ApiContext, ApiError, _Handlers, _plain, _query

log = logging.getLogger(__name__)


class _ReportHandlers(_Handlers):
    async def show_report(self, request: Request) -> Response:
        metrics = self.ctx.pipeline.metrics.service_reports
        try:
            response = await self._show_report(request)
        except ApiError:
            metrics.labels("-", "refused").inc()
            raise
        except Exception:
            metrics.labels("-", "failed").inc()
            raise  # answered 500 (or 503) and logged with its traceback by the server
        metrics.labels(request.query_params.get("format", "html"), "served").inc()
        return response

    async def _show_report(self, request: Request) -> Response:
        token = await self._caller(request)
        params = _query(request, ("from", "to", "format"))
        customer = _plain(request.path_params["customer"], "customer")
        fmt = params.get("format", "html")
        if fmt not in report.FORMATS:
            raise ApiError(400, f"format must be one of {', '.join(report.FORMATS)}, not {fmt!r}")
        if "from" not in params or "to" not in params:
            raise ApiError(400, "give the period as ?from=YYYY-MM-DD&to=YYYY-MM-DD")
        try:
            period = report.parse_period(params["from"], params["to"])
        except report.ReportPeriodError as exc:
            raise ApiError(400, f"field {exc.field!r} (query): {exc}") from None
        pipeline = self.ctx.pipeline
        memory_rules = report.memory_rule_names(pipeline.rules)

        def work(conn: Connection) -> report.Report | None:
            if not token.allows(customer) or not report.customer_known(conn, customer):
                return None
            return report.build_report(
                conn, customer, period, memory_rules=memory_rules, gap=pipeline.offline_after
            )

        built = await self._read(work)
        if built is None:
            raise ApiError(404, f"no customer {customer!r}")
        body = report.render(built, fmt)
        log.info(
            "service report served",
            extra={"customer": customer, "format": fmt, "actor": token.name},
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


def routes(ctx: ApiContext) -> list[Route]:
    """The report's routes, for `api.build_api` to mount with the others."""
    h = _ReportHandlers(ctx)
    return [Route("/reports/{customer}", h.show_report)]
