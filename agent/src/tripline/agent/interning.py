"""Series interning on the wire: each series named once per stream, then sent by id.

When the collector's Welcome offers a series table (``series_table_max`` > 0), the
transport turns each report's named samples into ``(id, value)`` pairs before writing
it, defining in the same report any series new on this stream (``series_defs``). The
spool keeps reports with named samples, so nothing stored depends on a stream: a new
stream gets a new :class:`SeriesInterner`, and a backlog resent after a reconnect
defines its series again on the first report that carries them.

Series past the table's size stay named samples, which every collector accepts.
"""

from __future__ import annotations

from tripline.v1 import tripline_pb2 as pb

_Key = tuple[str, tuple[tuple[str, str], ...]]


class SeriesInterner:
    """One stream's table, agent side: series -> id, in definition order."""

    __slots__ = ("_ids", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ids: dict[_Key, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def intern(self, report: pb.Report) -> int:
        """Rewrite ``report`` in place to carry its samples by id; returns how many
        series it newly defines."""
        if not report.samples:
            return 0
        ids = self._ids
        named: list[pb.Sample] = []
        series_ids: list[int] = []
        values: list[float] = []
        for sample in report.samples:
            labels = sample.labels
            key = (sample.name, tuple(sorted(labels.items())) if labels else ())
            series_id = ids.get(key)
            if series_id is None:
                if len(ids) >= self.limit:
                    named.append(sample)
                    continue
                series_id = ids[key] = len(ids)
                report.series_defs.add(id=series_id, name=sample.name, labels=labels)
            series_ids.append(series_id)
            values.append(sample.value)
        kept = [pb.Sample(name=s.name, labels=s.labels, value=s.value) for s in named]
        report.ClearField("samples")
        report.samples.extend(kept)
        report.series_ids.extend(series_ids)
        report.series_values.extend(values)
        return len(report.series_defs)
