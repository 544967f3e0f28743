"""A stream's series table: each series validated once per stream, then referred to by id.

An agent whose Welcome offered a table (``Welcome.series_table_max``) defines a series
once on its stream (``Report.series_defs``: id, name, labels) and from then on sends
only ``(id, value)`` pairs as two packed arrays (``series_ids``, ``series_values``), as
Prometheus remote-write 2.0 interns its strings. A steady-state report carries no names,
so the collector's per-report work is a bounds check and a list index per value instead
of name and label checks per sample.

A definition is validated exactly like a named sample (:func:`seriescheck.check_series`).
The table is the stream's own: a new stream starts empty, so an agent resending its
spooled reports after a reconnect defines their series again. Everything about it is
bounded and checked; each defect refuses the whole report with its own ``reason``:

* ``series_id``: a definition whose id is not the next one, or a value whose id is not
  defined on this stream;
* ``series_redefined``: a definition of an id the table already holds;
* ``series_table``: the table would exceed its limit (the agent's series cap), or a
  report carries a table the collector did not offer;
* ``series_values``: ``series_ids`` and ``series_values`` differ in length;
* ``duplicate_series``: a definition of a series the table already has under another id,
  or one id twice in a report (or a series both named and by id);
* ``value``: a value that is not finite.

Definitions join the table only once the whole report has decoded, so a refused report
leaves the table as it was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from tripline.collector.seriescheck import check_series
from tripline.collector.wirecheck import InvalidMessage, clean_text
from tripline.common.labels import Labels
from tripline.v1 import tripline_pb2 as pb

Series = tuple[str, Labels]


class SeriesTable:
    """The series one stream has defined, in id order. Not thread-safe: one per stream."""

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a series table holds at least one series, got limit {limit}")
        self.limit = limit
        # Series keys are shared process-wide (collector.interning): the table holds
        # references. No reverse map: only definitions look a series up, and those come
        # in a stream's first reports, so they build a set when they need one.
        self._entries: list[Series] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, series_id: int) -> Series:
        return self._entries[series_id]

    def decode(
        self, msg: pb.Report, where: str, seq: int, named: set[Series] | None
    ) -> list[tuple[str, Labels, float]]:
        """The report's table samples as (name, labels, value), after adding its
        definitions; ``named`` holds the report's named series when it has any."""
        entries = self._entries
        new: list[Series] = []
        if msg.series_defs:
            new = self._definitions(msg.series_defs, where, seq)
        ids = msg.series_ids
        values = msg.series_values
        if len(ids) != len(values):
            raise InvalidMessage(
                f"{where}: {len(ids)} series_ids but {len(values)} series_values; they pair "
                "up one to one",
                seq,
                "series_values",
            )
        if not ids:
            self._commit(new)
            return []
        size = len(entries) + len(new)
        # Checks over the packed arrays as a whole, C loops; the offender is looked for
        # only when one fails.
        if max(ids) >= size:
            bad = next(i for i in ids if i >= size)
            raise InvalidMessage(
                f"{where}: series id {bad} is not defined on this stream ({size} defined); "
                "a new stream starts with an empty table: define series again after a "
                "reconnect",
                seq,
                "series_id",
            )
        if len(set(ids)) != len(ids):
            seen: set[int] = set()
            bad = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise InvalidMessage(f"{where}: series id {bad} appears twice", seq, "duplicate_series")
        if not all(map(math.isfinite, values)):
            index = next(i for i, v in enumerate(values) if not math.isfinite(v))
            name = (entries + new)[ids[index]][0]
            raise InvalidMessage(
                f"{where}, series id {ids[index]} ({name}): value {values[index]} is not finite",
                seq,
                "value",
            )
        table = entries + new if new else entries
        series = list(map(table.__getitem__, ids))
        if named is not None and not named.isdisjoint(series):
            name, labels = next(s for s in series if s in named)
            raise InvalidMessage(
                f"{where}: series {clean_text(f'{name}{dict(labels)}', 200)} is sent both "
                "named and by id",
                seq,
                "duplicate_series",
            )
        self._commit(new)
        return [(name, labels, value) for (name, labels), value in zip(series, values, strict=True)]

    def _definitions(self, defs: Iterable[pb.SeriesDef], where: str, seq: int) -> list[Series]:
        entries = self._entries
        new: list[Series] = []
        known: set[Series] = set(entries)
        for index, definition in enumerate(defs):
            expected = len(entries) + len(new)
            if definition.id < expected:
                raise InvalidMessage(
                    f"{where}, series definition #{index}: id {definition.id} is already "
                    "defined on this stream; ids are never redefined (reconnect to start "
                    "a new table)",
                    seq,
                    "series_redefined",
                )
            if definition.id != expected:
                raise InvalidMessage(
                    f"{where}, series definition #{index}: id {definition.id} is not the "
                    f"next id {expected}; definitions number the table 0, 1, 2, ... in order",
                    seq,
                    "series_id",
                )
            if expected >= self.limit:
                raise InvalidMessage(
                    f"{where}, series definition #{index}: the table would hold more than "
                    f"{self.limit} series (max_series_per_agent); send further series "
                    "named, or reconnect to start a new table",
                    seq,
                    "series_table",
                )
            key = check_series(
                definition.name, definition.labels, where, index, seq, "series definition"
            )
            if key in known:
                raise InvalidMessage(
                    f"{where}, series definition #{index}: series "
                    f"{clean_text(f'{key[0]}{dict(key[1])}', 200)} is already in the table",
                    seq,
                    "duplicate_series",
                )
            known.add(key)
            new.append(key)
        return new

    def _commit(self, new: list[Series]) -> None:
        self._entries.extend(new)
