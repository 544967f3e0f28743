"""Sinks deliver one ticket event to a receiver: a webhook, an SMTP server, Alertmanager.

A sink raises :class:`DeliveryFailed` with ``retryable`` saying whether trying again can
help (receiver down, 5xx, 429) or not (a 4xx that will never change), and ``unreachable``
when no receiver answered at all; the delivery loop does the retrying, the parking, the
ordering and the bookkeeping. Rendering is defensive: whatever a ticket holds (an agent's
label with CR/LF, a time no calendar can show), the message is well formed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import re
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

import httpx

from tripline.collector.routes import Route

USER_AGENT = "tripline-collector/0.1"


# 307/308 keep the method and body; this many hops at most, to the same scheme only.
MAX_REDIRECTS = 5
SUBJECT_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


class DeliveryFailed(Exception):
    """The receiver did not take the event.

    ``unreachable``: nobody answered (connection refused, timeout); the route waits for the
    receiver and the event is never parked for it, since it says nothing about the event.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        unreachable: bool = False,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.unreachable = unreachable


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers are sent as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def one_line(text: str, limit: int) -> str:
    """Control characters (CR/LF included) become one space; at most ``limit`` characters.

    For mail headers: a CR/LF from an agent's label would otherwise start a new header.
    """
    flat = _CONTROL.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


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
    # the longest one delivery may take; a route's lease outlasts it
    timeout: float

    async def deliver(self, delivery: Delivery) -> None: ...

    async def close(self) -> None: ...


def _http_failure(response: httpx.Response, what: str) -> DeliveryFailed:
    retry_after = None
    header = response.headers.get("retry-after")
    if header and header.isdigit():
        retry_after = float(header)
    # 3xx reaching here (301/302/303, or a 307/308 not followed): a receiver moved, an
    # operator fixes the URL; retried then parked, so a retry after the fix still sends it.
    status = response.status_code
    retryable = status in (408, 425, 429) or status >= 500 or 300 <= status < 400
    return DeliveryFailed(
        f"{what} answered HTTP {response.status_code}: {response.text[:200]}",
        retryable=retryable,
        retry_after=retry_after,
    )


def sign(secret: str, body: bytes) -> str:
    """The X-Tripline-Signature header value: HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_following_redirects(
    client: httpx.AsyncClient, url: str, what: str, **kwargs: Any
) -> httpx.Response:
    """POST, following 307/308 (which keep method and body) to the same scheme, at most
    MAX_REDIRECTS hops. Other redirects are answers for the caller to judge; a redirect
    to another scheme (https to http would send the body in clear) or too deep is a
    retryable failure, never a final one."""
    scheme = httpx.URL(url).scheme
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = await client.post(url, **kwargs)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(
                f"{what} unreachable: {exc!r}", retryable=True, unreachable=True
            ) from None
        if response.status_code not in (307, 308) or "location" not in response.headers:
            return response
        try:
            target = httpx.URL(url).join(response.headers["location"])
        except (httpx.InvalidURL, ValueError):
            raise DeliveryFailed(
                f"{what} redirected to an invalid location", retryable=True
            ) from None
        if target.scheme != scheme:
            raise DeliveryFailed(
                f"{what} redirected from {scheme} to {target.scheme}; not followed",
                retryable=True,
            )
        url = str(target)
    raise DeliveryFailed(f"{what} redirected more than {MAX_REDIRECTS} times", retryable=True)


class WebhookSink:
    def __init__(self, route: Route) -> None:
        self.route = route
        self._url = str(route.settings["url"])
        self._secret = str(route.settings.get("secret") or "")
        self.timeout = float(route.settings.get("timeout", 10))
        self._client = httpx.AsyncClient(timeout=self.timeout, headers={"user-agent": USER_AGENT})

    async def deliver(self, delivery: Delivery) -> None:
        body = json.dumps(
            _finite(delivery.payload()), separators=(",", ":"), default=str, allow_nan=False
        ).encode()
        headers = {
            "content-type": "application/json",
            "x-tripline-event": str(delivery.event["kind"]),
            "x-tripline-idempotency-key": delivery.idempotency_key,
        }
        if self._secret:
            headers["x-tripline-signature"] = sign(self._secret, body)
        response = await post_following_redirects(
            self._client, self._url, "webhook", content=body, headers=headers
        )
        if not response.is_success:
            raise _http_failure(response, "webhook")

    async def close(self) -> None:
        await self._client.aclose()


def _iso(ts: float | None) -> str | None:
    """ISO 8601, or None for a time no calendar can show (NaN, 1e300, before year 1)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(float(ts), UTC).isoformat()
    except (OverflowError, ValueError, OSError, TypeError):
        return None


def _mail_date(ts: Any) -> str:
    try:
        return formatdate(float(ts), usegmt=True)
    except (OverflowError, ValueError, OSError, TypeError):
        return formatdate(usegmt=True)


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
    msg["Subject"] = one_line(f"[Tripline #{ticket['id']}] {ticket['summary']}", SUBJECT_MAX)
    msg["Date"] = _mail_date(event["at"])
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
    lines += _snapshot_lines(ticket.get("snapshot"), ticket.get("snapshot_taken_at"))
    lines += _previously_lines(ticket.get("previously"))
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _snapshot_lines(snapshot: Any, taken_at: Any) -> list[str]:
    """The processes the agent saw while the problem held (ticket["snapshot"])."""
    if not isinstance(snapshot, dict):
        return []
    lines = ["", f"Snapshot taken {_iso(taken_at) or '?'}, top processes by CPU:"]
    for p in _dicts(snapshot.get("top_cpu")):
        command = one_line(str(p.get("cmdline") or p.get("name") or ""), 200)
        lines.append(f"  {p.get('name')} (pid {p.get('pid')}) {p.get('cpu_ratio')}: {command}")
    return lines


def _previously_lines(previously: Any) -> list[str]:
    """How the rule's earlier tickets on this PC (or customer) ended."""
    if not isinstance(previously, dict) or not _dicts(previously.get("tickets")):
        return []
    lines = ["", "Previously:"]
    for t in _dicts(previously.get("tickets")):
        who = "auto-resolved" if t.get("auto_resolved") else f"resolved by {t.get('resolved_by')}"
        note = f": {one_line(str(t['note']), 200)}" if t.get("note") else ""
        lines.append(f"  #{t.get('id')} on {t.get('hostname')} {who}{note}")
    return lines


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
        self.timeout = float(s.get("timeout", 20))

    async def deliver(self, delivery: Delivery) -> None:
        message = email_message(delivery, sender=self._from, to=self._to)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        try:
            smtp: smtplib.SMTP
            if self._ssl:
                smtp = smtplib.SMTP_SSL(
                    self._host, self._port, timeout=self.timeout, context=self._tls_context()
                )
            else:
                smtp = smtplib.SMTP(self._host, self._port, timeout=self.timeout)
            with smtp:
                if self._starttls:
                    smtp.starttls(context=self._tls_context())
                if self._username:
                    smtp.login(str(self._username), str(self._password or ""))
                smtp.send_message(message)
        except smtplib.SMTPServerDisconnected as exc:
            raise DeliveryFailed(
                f"SMTP server unreachable: {exc!r}", retryable=True, unreachable=True
            ) from None
        except smtplib.SMTPResponseException as exc:
            # 4xx is "try again later" in SMTP; 5xx is final.
            raise DeliveryFailed(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", retryable=exc.smtp_code < 500
            ) from None
        except smtplib.SMTPException as exc:
            # answered, but not with a code of its own (recipients refused, no STARTTLS...)
            raise DeliveryFailed(f"SMTP failed: {exc!r}", retryable=True) from None
        except OSError as exc:  # after SMTPException, which is an OSError too
            raise DeliveryFailed(
                f"SMTP server unreachable: {exc!r}", retryable=True, unreachable=True
            ) from None

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self._tls_ca)

    async def close(self) -> None:
        pass


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
    starts = _iso(ticket["opened_at"])
    if starts is not None:
        alert["startsAt"] = starts
    if ticket["status"] == "resolved":
        # A resolve must end the alert even when its time cannot be shown: "now".
        alert["endsAt"] = _iso(ticket.get("resolved_at")) or datetime.now(UTC).isoformat()
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
        body = json.dumps(_finite(alerts), default=str, allow_nan=False).encode()
        response = await post_following_redirects(
            self._client,
            self._url,
            "Alertmanager",
            content=body,
            headers={"content-type": "application/json"},
        )
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
