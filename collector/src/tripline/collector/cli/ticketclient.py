"""The ticket operations the CLI offers, behind one interface with two implementations:
the local store (the data dir or --database-url) and a running collector's HTTP API
(--api-url). `cli/tickets.py` writes each command once against :class:`TicketClient`.

Both hand back tickets as the API's JSON shape (``Ticket.to_dict()``), so printing does
not care where a ticket came from.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from tripline.collector.cli.apiclient import ApiClient
from tripline.collector.cli.errors import CliError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from tripline.collector.store import Store
    from tripline.collector.ticketmodel import Ticket, TicketStatus

TicketDict = dict[str, Any]
TicketRows = list[TicketDict]


class TicketClient(Protocol):
    """What `tripline tickets` does to the queue. ``actor`` None: the implementation's
    default (the login name locally; through the API always the token's name)."""

    def list(
        self, *, status: TicketStatus | None, customer: str | None, limit: int
    ) -> TicketRows: ...

    def show(self, ticket_id: int) -> TicketDict: ...

    def ack(self, ticket_id: int, *, actor: str | None) -> TicketDict: ...

    def comment(self, ticket_id: int, text: str, *, actor: str | None) -> TicketDict: ...

    def resolve(self, ticket_id: int, note: str | None, *, actor: str | None) -> TicketDict: ...

    def tier(self, ticket_id: int, tier: int, *, actor: str | None) -> TicketDict: ...


class LocalTickets:
    """Tickets in an open store; each change is one transaction at ``now``. A refused
    change (unknown id, already resolved...) is a CliError naming the ticket."""

    def __init__(self, store: Store, now: float) -> None:
        self._store = store
        self._now = now

    def list(self, *, status: TicketStatus | None, customer: str | None, limit: int) -> TicketRows:
        from tripline.collector import ticketqueries

        with self._store.read() as conn:
            rows = ticketqueries.list_tickets(conn, status=status, customer=customer, limit=limit)
        return [t.to_dict() for t in rows]

    def show(self, ticket_id: int) -> TicketDict:
        from tripline.collector import ticketmodel, ticketqueries

        try:
            with self._store.read() as conn:
                return ticketqueries.get_ticket(conn, ticket_id).to_dict()
        except ticketmodel.TicketError as exc:
            raise CliError(str(exc)) from None

    def ack(self, ticket_id: int, *, actor: str | None) -> TicketDict:
        from tripline.collector import tickets

        return self._change(
            lambda conn, who: tickets.acknowledge(conn, ticket_id, actor=who, now=self._now),
            actor,
        )

    def comment(self, ticket_id: int, text: str, *, actor: str | None) -> TicketDict:
        from tripline.collector import tickets

        return self._change(
            lambda conn, who: tickets.comment(conn, ticket_id, actor=who, text=text, now=self._now),
            actor,
        )

    def resolve(self, ticket_id: int, note: str | None, *, actor: str | None) -> TicketDict:
        from tripline.collector import tickets

        return self._change(
            lambda conn, who: tickets.resolve(conn, ticket_id, actor=who, now=self._now, note=note),
            actor,
        )

    def tier(self, ticket_id: int, tier: int, *, actor: str | None) -> TicketDict:
        from tripline.collector import tickets

        return self._change(
            lambda conn, who: tickets.reassign_tier(
                conn, ticket_id, tier=tier, actor=who, now=self._now
            ),
            actor,
        )

    def _change(self, change: Callable[[Connection, str], Ticket], actor: str | None) -> TicketDict:
        from tripline.collector import ticketmodel

        who = actor or getpass.getuser()
        try:
            with self._store.transaction() as conn:
                ticket = change(conn, who)
        except ticketmodel.TicketError as exc:
            raise CliError(str(exc)) from None
        return ticket.to_dict()


class HttpTickets:
    """Tickets through a running collector's API: the change is recorded as the API
    token's name, so an ``actor`` is refused before this is built (see api_client)."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    def list(self, *, status: TicketStatus | None, customer: str | None, limit: int) -> TicketRows:
        params = {"status": status, "customer": customer, "limit": limit}
        items: TicketRows = self._api.call("GET", "/tickets", params=params)["items"]
        return items

    def show(self, ticket_id: int) -> TicketDict:
        return self._post_or_get("GET", ticket_id, "", None)

    def ack(self, ticket_id: int, *, actor: str | None) -> TicketDict:
        return self._post_or_get("POST", ticket_id, "/ack", {})

    def comment(self, ticket_id: int, text: str, *, actor: str | None) -> TicketDict:
        return self._post_or_get("POST", ticket_id, "/comment", {"text": text})

    def resolve(self, ticket_id: int, note: str | None, *, actor: str | None) -> TicketDict:
        return self._post_or_get("POST", ticket_id, "/resolve", {"note": note})

    def tier(self, ticket_id: int, tier: int, *, actor: str | None) -> TicketDict:
        return self._post_or_get("POST", ticket_id, "/tier", {"tier": tier})

    def _post_or_get(self, method: str, ticket_id: int, action: str, body: Any) -> TicketDict:
        ticket: TicketDict = self._api.call(method, f"/tickets/{ticket_id}{action}", body=body)
        return ticket
