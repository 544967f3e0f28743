"""Progress lines while the agent resends a backlog after an outage."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

# A backlog this large after a reconnect is worth progress lines in the log.
REPLAY_REPORT_THRESHOLD = 100


@dataclass(frozen=True)
class Replay:
    """Progress of resending a backlog after an outage, logged every tenth of the way."""

    first: int
    last: int
    next_report: int

    @classmethod
    def start(cls, acked: int, newest: int) -> Replay | None:
        backlog = newest - acked
        if backlog < REPLAY_REPORT_THRESHOLD:
            return None
        log.info("replaying backlog", extra={"reports": backlog, "from_seq": acked + 1})
        return cls(first=acked, last=newest, next_report=acked + max(1, backlog // 10))

    def progress(self, acked: int) -> Replay | None:
        total = self.last - self.first
        if acked >= self.last:
            log.info("backlog replayed", extra={"reports": total})
            return None
        if acked < self.next_report:
            return self
        log.info(
            "replaying backlog",
            extra={
                "done": acked - self.first,
                "reports": total,
                "percent": round(100 * (acked - self.first) / total),
            },
        )
        return Replay(self.first, self.last, acked + max(1, total // 10))
