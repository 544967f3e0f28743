"""What a ticket is: its fields and timeline events, the lifecycle's policy and errors,
and the key that names a problem.

Plain data and no database, so the API, the CLI and delivery can name a ticket without the
lifecycle (tickets.py) or the queries (ticketqueries.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from tripline.common.labels import Labels

ENGINE_ACTOR = "tripline"

TicketStatus = Literal["open", "acknowledged", "resolved"]


def _default_escalation() -> dict[int, float]:
    return {1: 1800.0, 2: 3600.0}


@dataclass(frozen=True)
class TicketPolicy:
    reopen_window: float = 3600.0
    """A problem back within this many seconds of its resolution reopens its ticket."""
    flap_count: int = 3
    """This many reopens within `flap_window` mark the ticket flapping."""
    flap_window: float = 6 * 3600.0
    escalate_after: Mapping[int, float] = field(default_factory=_default_escalation)
    """tier -> seconds an open, unacknowledged ticket waits before moving up a tier."""


@dataclass(frozen=True)
class TicketEvent:
    seq: int
    at: float
    kind: str
    actor: str
    message: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Ticket:
    id: int
    problem_key: str
    customer: str
    agent_id: str
    hostname: str
    rule: str
    labels: Labels
    status: TicketStatus
    severity: str
    tier: int
    summary: str
    runbook: str | None
    value: float
    threshold: float | None
    context: dict[str, Any]
    opened_at: float
    tier_since: float
    acknowledged_at: float | None
    acknowledged_by: str | None
    resolved_at: float | None
    resolved_by: str | None
    resolved_value: float | None
    resolve_reason: str | None
    reopen_count: int
    flapping: bool
    updated_at: float
    event_seq: int
    events: tuple[TicketEvent, ...] = ()
    # Filled in by get_ticket only (a list of tickets leaves them empty): the snapshot
    # taken while the problem held and when the collector received it; the earlier
    # tickets of this rule on this PC (else this customer) and how they ended.
    snapshot: dict[str, Any] | None = None
    snapshot_taken_at: float | None = None
    previously: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: labels as an object, events as a list of objects."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["labels"] = dict(self.labels)
        out["events"] = [{f.name: getattr(e, f.name) for f in fields(e)} for e in self.events]
        return out


@dataclass(frozen=True)
class TicketChange:
    ticket_id: int
    kind: str  # "opened" | "reopened" | "resolved" | "escalated" | "unchanged"


class TicketError(Exception):
    """Base of the ticket lifecycle's named errors."""


class TicketNotFound(TicketError):
    def __init__(self, ticket_id: int) -> None:
        super().__init__(f"no ticket {ticket_id}")
        self.ticket_id = ticket_id


class InvalidTicketTransition(TicketError):
    def __init__(self, ticket_id: int, action: str, why: str) -> None:
        super().__init__(f"cannot {action} ticket {ticket_id}: {why}")
        self.ticket_id = ticket_id
        self.action = action
        self.why = why


def problem_key(customer: str, agent_id: str, rule: str, labels: Labels) -> str:
    """Stable id of a problem: the same customer, agent, rule and series labels (in any
    order) give the same key."""
    canonical = json.dumps([customer, agent_id, rule, sorted(labels)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
