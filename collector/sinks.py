"""Sinks deliver one ticket event to a receiver: a webhook, an SMTP server, Alertmanager.

A sink raises :class:`DeliveryFailed` with ``retryable`` saying whether trying again can
help (receiver down, 5xx, 429) or not (a 4xx that will never change); the delivery loop
does the retrying, the ordering and the bookkeeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

import httpx

from collector.routes import Route

USER_AGENT = "tripline-collector/0.1"


class DeliveryFailed(Exception):
    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Delivery:
    """One event of one ticket, as every sink sees it."""

    event_id: int
    ticket: Mapping[str, Any]
    event: Mapping[str, Any]

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and restarts: receivers drop repeats by it."""
        return f"{self.ticket['id']}-{self.event['seq']}"

    def payload(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key,
            "event": dict(self.event),
            "ticket": dict(self.ticket),
        }


class Sink(Protocol):
    route: Route

    async def deliver(self, delivery: Delivery) -> None: ...

    async def close(self) -> None: ...


def _http_failure(response: httpx.Response, what: str) -> DeliveryFailed:
    retry_after = None
    header = response.headers.get("retry-after")
    if header and header.isdigit():
        retry_after = float(header)
    retryable = response.status_code in (408, 425, 429) or response.status_code >= 500
    return DeliveryFailed(
        f"{what} answered HTTP {response.status_code}: {response.text[:200]}",
        retryable=retryable,
        retry_after=retry_after,
    )


def sign(secret: str, body: bytes) -> str:
    """The X-Tripline-Signature header value: HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    def __init__(self, route: Route) -> None:
        self.route = route
        self._url = str(route.settings["url"])
        self._secret = str(route.settings.get("secret") or "")
        self._client = httpx.AsyncClient(
            timeout=float(route.settings.get("timeout", 10)), headers={"user-agent": USER_AGENT}
        )

    async def deliver(self, delivery: Delivery) -> None:
        body = json.dumps(delivery.payload(), separators=(",", ":"), default=str).encode()
        headers = {
            "content-type": "application/json",
            "x-tripline-event": str(delivery.event["kind"]),
            "x-tripline-idempotency-key": delivery.idempotency_key,
        }
        if self._secret:
            headers["x-tripline-signature"] = sign(self._secret, body)
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"webhook unreachable: {exc!r}", retryable=True) from None
        if not response.is_success:
            raise _http_failure(response, "webhook")

    async def close(self) -> None:
        await self._client.aclose()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def email_message(delivery: Delivery, *, sender: str, to: Sequence[str]) -> EmailMessage:
    """One mail per event, threaded per ticket so a helpdesk keeps one conversation.

    The "opened" mail carries the ticket's root Message-ID; every later event answers it
    (In-Reply-To/References), and the subject keeps the "[Tripline #ID]" tag that mail-to-
    ticket gateways also match on.
    """
    ticket, event = delivery.ticket, delivery.event
    domain = sender.rpartition("@")[2] or "tripline.invalid"
    root = f"<tripline-ticket-{ticket['id']}@{domain}>"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"[Tripline #{ticket['id']}] {ticket['summary']}"
    msg["Date"] = formatdate(float(event["at"]), usegmt=True)
    if event["seq"] == 1:
        msg["Message-ID"] = root
    else:
        msg["Message-ID"] = f"<tripline-ticket-{ticket['id']}-{event['seq']}@{domain}>"
        msg["In-Reply-To"] = root
        msg["References"] = root
    msg["X-Tripline-Idempotency-Key"] = delivery.idempotency_key
    msg["X-Tripline-Event"] = str(event["kind"])
    lines = [
        f"{str(event['kind']).capitalize()} by {event['actor']}: {event.get('message') or ''}",
        "",
        f"Ticket #{ticket['id']} [{ticket['status']}] {ticket['severity']}, tier {ticket['tier']}",
        f"Customer: {ticket['customer']}   Host: {ticket['hostname']}",
        f"Rule: {ticket['rule']} {json.dumps(ticket.get('labels') or {})}",
        f"Value: {ticket['value']} (threshold {ticket.get('threshold')})",
    ]
    if ticket.get("runbook"):
        lines += ["", f"Runbook: {ticket['runbook']}"]
    context = ticket.get("context") or {}
    if context.get("top_cpu"):
        lines += ["", "Top processes by CPU:"]
        lines += [
            f"  {p.get('name')} (pid {p.get('pid')}) {p.get('cpu_ratio')}"
            for p in context["top_cpu"]
        ]
    if context.get("filesystems"):
        lines += ["", "Filesystems:"]
        lines += [
            f"  {f.get('mountpoint')}: {f.get('used_ratio')} used" for f in context["filesystems"]
        ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


class EmailSink:
    def __init__(self, route: Route) -> None:
        self.route = route
        s = route.settings
        self._host = str(s["host"])
        self._port = int(s.get("port", 465 if s.get("ssl") else 587 if s.get("starttls") else 25))
        self._starttls = bool(s.get("starttls", False))
        self._ssl = bool(s.get("ssl", False))
        self._username = s.get("username")
        self._password = s.get("password")
        # A CA file to trust instead of the system's (a helpdesk's own or a test CA).
        self._tls_ca = None if s.get("tls_ca") is None else str(s["tls_ca"])
        self._from = str(s["from"])
        self._to = tuple(s["to"])
        self._timeout = float(s.get("timeout", 20))

    async def deliver(self, delivery: Delivery) -> None:
        message = email_message(delivery, sender=self._from, to=self._to)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        try:
            smtp: smtplib.SMTP
            if self._ssl:
                smtp = smtplib.SMTP_SSL(
                    self._host, self._port, timeout=self._timeout, context=self._tls_context()
                )
            else:
                smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
            with smtp:
                if self._starttls:
                    smtp.starttls(context=self._tls_context())
                if self._username:
                    smtp.login(str(self._username), str(self._password or ""))
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            # 4xx is "try again later" in SMTP; 5xx is final.
            raise DeliveryFailed(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", retryable=exc.smtp_code < 500
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"SMTP server unreachable: {exc!r}", retryable=True) from None

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self._tls_ca)

    async def close(self) -> None:
        pass


def alertmanager_alert(ticket: Mapping[str, Any], generator_url: str = "") -> dict[str, Any]:
    """A ticket as an Alertmanager v2 alert; labels are stable so AM groups and dedupes."""
    labels = {
        **{
            f"label_{k}" if k in ("alertname", "severity") else k: v
            for k, v in (ticket.get("labels") or {}).items()
        },
        "alertname": ticket["rule"],
        "customer": ticket["customer"],
        "agent_id": ticket["agent_id"],
        "host": ticket["hostname"],
        "severity": ticket["severity"],
        "tier": str(ticket["tier"]),
        "tripline_ticket": str(ticket["id"]),
    }
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": ticket["summary"],
            "runbook": ticket.get("runbook") or "",
            "value": str(ticket["value"]),
        },
        "startsAt": _iso(ticket["opened_at"]),
    }
    if ticket["status"] == "resolved" and ticket.get("resolved_at"):
        alert["endsAt"] = _iso(ticket["resolved_at"])
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
        self._client = httpx.AsyncClient(
            timeout=float(route.settings.get("timeout", 10)), headers={"user-agent": USER_AGENT}
        )

    async def deliver(self, delivery: Delivery) -> None:
        await self._post([alertmanager_alert(delivery.ticket)])

    async def resync(self, open_tickets: Sequence[Mapping[str, Any]]) -> None:
        if open_tickets:
            await self._post([alertmanager_alert(t) for t in open_tickets])

    async def _post(self, alerts: list[dict[str, Any]]) -> None:
        try:
            response = await self._client.post(self._url, json=alerts)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"Alertmanager unreachable: {exc!r}", retryable=True) from None
        if not response.is_success:
            raise _http_failure(response, "Alertmanager")

    async def close(self) -> None:
        await self._client.aclose()


def build_sink(route: Route) -> Sink:
    if route.kind == "webhook":
        return WebhookSink(route)
    if route.kind == "email":
        return EmailSink(route)
    return AlertmanagerSink(route)
