"""The e-mail sink: one mail per ticket event, threaded per ticket, sent over SMTP."""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from tripline.collector.routes import Route
from tripline.collector.sinks.base import Delivery, DeliveryFailed, iso_time, one_line

SUBJECT_MAX = 200


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
    lines = ["", f"Snapshot taken {iso_time(taken_at) or '?'}, top processes by CPU:"]
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
