"""The Alertmanager sink: one alert per ticket, posted to the v2 API, re-sent while open."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from tripline.collector.routes import Route
from tripline.collector.sinks.base import USER_AGENT, Delivery, finite, iso_time
from tripline.collector.sinks.posting import http_failure, post_following_redirects

# Alertmanager's identity of an alert is its label set. Only what never changes over a
# ticket's life is a label; tier, severity, summary, value... change (escalation, a rule
# reload) and are annotations, or one ticket would become several alerts, the old ones
# never resolved.
IDENTITY_LABELS = ("alertname", "customer", "agent_id", "host", "tripline_ticket")


def alertmanager_alert(ticket: Mapping[str, Any], generator_url: str = "") -> dict[str, Any]:
    """A ticket as an Alertmanager v2 alert: one alert per ticket, whatever changes."""
    labels = {
        **{
            f"label_{k}" if k in IDENTITY_LABELS else str(k): str(v)
            for k, v in (ticket.get("labels") or {}).items()
        },
        "alertname": str(ticket["rule"]),
        "customer": str(ticket["customer"]),
        "agent_id": str(ticket["agent_id"]),
        "host": str(ticket["hostname"]),
        "tripline_ticket": str(ticket["id"]),
    }
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": str(ticket["summary"]),
            "severity": str(ticket["severity"]),
            "tier": str(ticket["tier"]),
            "runbook": str(ticket.get("runbook") or ""),
            "value": str(ticket["value"]),
        },
    }
    starts = iso_time(ticket["opened_at"])
    if starts is not None:
        alert["startsAt"] = starts
    if ticket["status"] == "resolved":
        # A resolve must end the alert even when its time cannot be shown: "now".
        alert["endsAt"] = iso_time(ticket.get("resolved_at")) or datetime.now(UTC).isoformat()
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


class AlertmanagerSink:
    """Posts firing and resolved alerts to Alertmanager's v2 API.

    Alertmanager forgets a firing alert not re-sent within its resolve_timeout, so the
    delivery loop also calls :meth:`resync` with every open ticket periodically.
    """

    def __init__(self, route: Route) -> None:
        self.route = route
        self._url = str(route.settings["url"]).rstrip("/") + "/api/v2/alerts"
        self.resend_interval = float(route.settings.get("resend_interval", 60))
        self.timeout = float(route.settings.get("timeout", 10))
        self._client = httpx.AsyncClient(timeout=self.timeout, headers={"user-agent": USER_AGENT})

    async def deliver(self, delivery: Delivery) -> None:
        await self._post([alertmanager_alert(delivery.ticket)])

    async def resync(self, open_tickets: Sequence[Mapping[str, Any]]) -> None:
        if open_tickets:
            await self._post([alertmanager_alert(t) for t in open_tickets])

    async def _post(self, alerts: list[dict[str, Any]]) -> None:
        body = json.dumps(finite(alerts), default=str, allow_nan=False).encode()
        response = await post_following_redirects(
            self._client,
            self._url,
            "Alertmanager",
            content=body,
            headers={"content-type": "application/json"},
        )
        if not response.is_success:
            raise http_failure(response, "Alertmanager")

    async def close(self) -> None:
        await self._client.aclose()
