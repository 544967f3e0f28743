"""Sinks deliver one ticket event to a receiver: a webhook, an SMTP server, Alertmanager.

One module per sink (`webhook`, `mail`, `alertmanager`), what they share in `base` and
`posting`; `build_sink` makes the one a route names.

A sink raises :class:`DeliveryFailed` with ``retryable`` saying whether trying again can
help (receiver down, 5xx, 429) or not (a 4xx that will never change), and ``unreachable``
when no receiver answered at all; the delivery loop does the retrying, the parking, the
ordering and the bookkeeping. Rendering is defensive: whatever a ticket holds (an agent's
label with CR/LF, a time no calendar can show), the message is well formed.
"""

from __future__ import annotations

from tripline.collector.routes import Route
from tripline.collector.sinks.alertmanager import AlertmanagerSink, alertmanager_alert
from tripline.collector.sinks.base import Delivery, DeliveryFailed, Sink, one_line
from tripline.collector.sinks.mail import EmailSink, email_message
from tripline.collector.sinks.posting import post_following_redirects, sign
from tripline.collector.sinks.webhook import WebhookSink

__all__ = [
    "AlertmanagerSink",
    "Delivery",
    "DeliveryFailed",
    "EmailSink",
    "Sink",
    "WebhookSink",
    "alertmanager_alert",
    "build_sink",
    "email_message",
    "one_line",
    "post_following_redirects",
    "sign",
]


def build_sink(route: Route) -> Sink:
    if route.kind == "webhook":
        return WebhookSink(route)
    if route.kind == "email":
        return EmailSink(route)
    return AlertmanagerSink(route)
