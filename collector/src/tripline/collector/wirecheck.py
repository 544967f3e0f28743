"""What every check of an agent's messages shares: the rejection and its reasons,
control-character escaping, plausible times.

Everything an agent sends is untrusted (collector.convert says how each message is
checked); a rejection names the field and carries a ``reason`` (one per class of defect)
for ``tripline_collector_reports_rejected_total{reason}``.

The names with an underscore are shared by the edge's modules only (convert,
seriescheck, reportcontext), under the names they had in convert.py.
"""

from __future__ import annotations

import itertools
import math
import re

# Agent times outside these are a broken clock or an attack: 2000-01-01 .. 2100-01-01 UTC.
MIN_TIME = 946_684_800.0
MAX_TIME = 4_102_444_800.0

# Reasons for tripline_collector_reports_rejected_total, one per class of defect.
REASONS = (
    "metric_name",
    "label_name",
    "label_reserved",
    "label_value",
    "core_labels",
    "value",
    "duplicate_series",
    "size",
    "time",
    "host",
    "instance_id",
    "seq",
    "context",
    "token",
    "series_table",
    "series_id",
    "series_redefined",
    "series_values",
)


class InvalidMessage(ValueError):
    """A message from an agent that cannot be applied.

    ``seq`` is set for reports; ``reason`` is the class of defect (one of
    :data:`REASONS`) counted in ``tripline_collector_reports_rejected_total``.
    """

    def __init__(self, message: str, seq: int | None = None, reason: str = "size") -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(message)


# C0, DEL and C1: what a terminal, a log line or a mail header may act on.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {c: f"\\x{c:02x}" for c in itertools.chain(range(0x20), range(0x7F, 0xA0))}


def clean_text(value: str, limit: int) -> str:
    """``value`` with control characters escaped as ``\\xNN``, cut to ``limit`` characters."""
    if _CONTROL.search(value) is not None:
        value = value.translate(_ESCAPES)
    return value[:limit]


def _shown(value: str, limit: int = 80) -> str:
    """A value quoted for an error message: escaped and short."""
    return repr(clean_text(value, limit))


def _check_time(value: float, field: str, seq: int | None = None) -> None:
    if not (math.isfinite(value) and MIN_TIME <= value <= MAX_TIME):
        raise InvalidMessage(
            f"{field} {value!r} is not a plausible unix time (finite, between "
            f"{MIN_TIME:.0f} and {MAX_TIME:.0f}): check the PC's clock",
            seq,
            "time",
        )
