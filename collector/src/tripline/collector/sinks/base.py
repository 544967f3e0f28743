"""What every sink shares: the event as sinks see it (`Delivery`), the `Sink` protocol, the
`DeliveryFailed` a sink raises, and the defensive helpers rendering relies on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tripline.collector.routes import Route

USER_AGENT = "tripline-collector/0.1"
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


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers are sent as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
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


def iso_time(ts: float | None) -> str | None:
    """ISO 8601, or None for a time no calendar can show (NaN, 1e300, before year 1)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(float(ts), UTC).isoformat()
    except (OverflowError, ValueError, OSError, TypeError):
        return None
