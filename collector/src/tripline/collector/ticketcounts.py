"""Ticket counts for /metrics, kept off the scrape path.

Counting tickets by status, severity and tier is a GROUP BY over every ticket ever
stored; doing it per scrape makes each scrape cost more as the history grows, and ran on
the event loop that applies reports. Here the counts are a cached mapping that a scrape
reads without touching the database, recounted off the loop only when tickets changed:

- at start (:meth:`TicketCounts.refresh` before the HTTP port opens), so the figures are
  right after a restart;
- after this process changed a ticket (:meth:`TicketCounts.changed`, called once the
  change is committed);
- when another process changed one (``tripline tickets ack`` on the same database, a
  second collector on PostgreSQL): every ticket change writes a ticket event, so the
  newest event id, an index lookup, tells whether anything changed since the last count;
- and at least every ``recount_every`` seconds, because on PostgreSQL a transaction can
  commit an event id lower than one already seen (ids are taken at insert, commits land
  in any order), which the newest id alone would miss.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from sqlalchemy import func, select

from tripline.collector import ticketqueries
from tripline.collector.schema import ticket_events
from tripline.collector.store import Store

Counts = Mapping[tuple[str, str, int], int]

# Seconds between recounts when nothing visibly changed (the PostgreSQL safety net).
RECOUNT_EVERY = 300.0


class TicketCounts:
    """(status, severity, tier) -> tickets, as of the last recount.

    :attr:`counts` is replaced whole, never mutated, so a scrape in any thread reads a
    consistent mapping. :meth:`refresh` does database work: call it in a thread.
    """

    def __init__(self, store: Store, recount_every: float = RECOUNT_EVERY) -> None:
        self.store = store
        self.recount_every = recount_every
        self.counts: Counts = {}
        self.recounts = 0  # how many GROUP BYs ran (for tests and a log line)
        self._newest_event: int | None = None
        self._dirty = True
        self._next_recount = 0.0
        self._lock = threading.Lock()  # one refresh at a time

    def changed(self) -> None:
        """This process committed a ticket change: the next refresh recounts."""
        self._dirty = True

    def refresh(self, now: float) -> bool:
        """Recount if anything changed (or the safety interval passed); True if it did.

        Raises :class:`~tripline.collector.store.StoreUnavailable` when the database
        cannot be read; the previous counts stay.
        """
        with self._lock:
            # Cleared before reading: a change committed after this point sets it again,
            # and one committed before it is in the snapshot read below.
            dirty, self._dirty = self._dirty, False
            try:
                with self.store.read() as conn:
                    newest = conn.scalar(select(func.max(ticket_events.c.id)))
                    if not dirty and newest == self._newest_event and now < self._next_recount:
                        return False
                    counts = ticketqueries.count_by_state(conn)
            except BaseException:
                self._dirty = self._dirty or dirty
                raise
            self.counts = counts
            self._newest_event = newest
            self._next_recount = now + self.recount_every
            self.recounts += 1
            return True
