"""The little history the service report needs, written from the report-apply path.

Live state keeps only a short window per series, so two things are kept here, cheaply:

- presence spans (`schema.agent_presence`): when each agent was reporting, on the
  collector's clock; a span's end is rewritten at most every PRESENCE_STEP seconds, and a
  new span starts after a silence longer than the offline threshold or when the PC's
  boot time changes (a reboot), so reboots are the spans' boot-time changes;
- one filesystem usage sample per agent, mountpoint and UTC day (`schema.filesystem_usage`),
  rewritten at most every FS_SAMPLE_STEP seconds and kept FS_USAGE_DAYS days.

Everything runs inside the transaction that applies the report (the caller's), so a report
that does not commit leaves no history either. The in-memory bookkeeping only decides
when to write; a span row lost to a rolled-back transaction is simply inserted again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, update

from tripline.collector.database import insert_ignoring_conflict
from tripline.collector.schema import agent_presence, filesystem_usage
from tripline.common.labels import Labels

# Seconds between writes of a presence span's end: the precision of availability figures.
PRESENCE_STEP = 300.0
# Seconds between writes of one filesystem's daily sample.
FS_SAMPLE_STEP = 3600.0
# Days of filesystem samples kept (a report spans at most 400 days).
FS_USAGE_DAYS = 400
# A boot time that moves less than this is the same boot (clock adjustments move it a bit).
BOOT_JITTER = 120.0
DAY = 86400.0


# Built once: every applied report may run them (their names would shadow the columns').
_SPAN_END = (
    update(agent_presence)
    .where(
        agent_presence.c.agent_id == bindparam("a"),
        agent_presence.c.started_at == bindparam("started"),
    )
    .values(ended_at=bindparam("ended"))
)
_FS_SAMPLE = (
    update(filesystem_usage)
    .where(
        filesystem_usage.c.agent_id == bindparam("a"),
        filesystem_usage.c.mountpoint == bindparam("mount"),
        filesystem_usage.c.day == bindparam("d"),
    )
    .values(sampled_at=bindparam("at"), size_bytes=bindparam("size"), used_bytes=bindparam("used"))
)


@dataclass
class _Span:
    started_at: float
    last: float  # the latest report seen in it
    written: float  # the end stored in its row
    boot_time: float | None


class HistoryRecorder:
    """Writes presence spans and filesystem samples; one per collector process.

    `gap`: a silence longer than this ends a span (the collector's offline threshold).
    """

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self._spans: dict[str, _Span] = {}
        self._fs_written: dict[tuple[str, str], float] = {}

    def record(
        self,
        conn: Connection,
        agent_id: str,
        samples: Iterable[tuple[str, Labels, float]],
        *,
        received_at: float,
        report_at: float,
    ) -> None:
        """Note one applied report: `received_at` on the collector's clock (presence),
        `report_at` the time the report stands for (filesystem samples)."""
        boot: float | None = None
        sizes: dict[str, float] = {}
        avail: dict[str, float] = {}
        for name, labels, value in samples:
            if name == "boot_time_seconds":
                boot = value
            elif name == "filesystem_size_bytes":
                sizes[dict(labels).get("mountpoint", "")] = value
            elif name == "filesystem_avail_bytes":
                avail[dict(labels).get("mountpoint", "")] = value
        self._presence(conn, agent_id, received_at, boot)
        for mountpoint, size in sizes.items():
            if mountpoint and mountpoint in avail and size > 0:
                self._filesystem(conn, agent_id, mountpoint, size, avail[mountpoint], report_at)

    def forget(self, agent_id: str) -> None:
        """Drop a retired agent's bookkeeping."""
        self._spans.pop(agent_id, None)
        for key in [k for k in self._fs_written if k[0] == agent_id]:
            del self._fs_written[key]

    def _presence(self, conn: Connection, agent_id: str, now: float, boot: float | None) -> None:
        span = self._spans.get(agent_id)
        rebooted = (
            span is not None
            and boot is not None
            and span.boot_time is not None
            and abs(boot - span.boot_time) > BOOT_JITTER
        )
        if span is None or now - span.last > self.gap or rebooted or now < span.last:
            span = _Span(started_at=now, last=now, written=now, boot_time=boot)
            self._spans[agent_id] = span
            self._insert_span(conn, agent_id, span)
            return
        span.last = now
        if span.boot_time is None:
            span.boot_time = boot
        if now - span.written < PRESENCE_STEP:
            return
        span.written = now
        moved = conn.execute(
            _SPAN_END, {"a": agent_id, "started": span.started_at, "ended": now}
        ).rowcount
        if moved == 0:  # its insert was rolled back with an earlier report
            self._insert_span(conn, agent_id, span)

    @staticmethod
    def _insert_span(conn: Connection, agent_id: str, span: _Span) -> None:
        # A span of another collector (or of before a restart) may start at the same
        # instant only by coincidence; taken by another, this one's time is in that span
        # already, close enough. ON CONFLICT DO NOTHING rather than a savepoint: every
        # agent's first report after a start runs this, the whole fleet at once.
        insert_ignoring_conflict(
            conn,
            agent_presence,
            agent_id=agent_id,
            started_at=span.started_at,
            ended_at=span.written,
            boot_time=span.boot_time,
        )

    def _filesystem(
        self, conn: Connection, agent_id: str, mountpoint: str, size: float, free: float, at: float
    ) -> None:
        key = (agent_id, mountpoint)
        last = self._fs_written.get(key)
        if last is not None and 0 <= at - last < FS_SAMPLE_STEP:
            return
        self._fs_written[key] = at
        day = int(at // DAY)
        used = max(0.0, size - free)
        changed = conn.execute(
            _FS_SAMPLE,
            {"a": agent_id, "mount": mountpoint, "d": day, "at": at, "size": size, "used": used},
        ).rowcount
        if changed:
            return
        # The first sample of a day: the one place old days are pruned, once a day per mount.
        # Another collector may have taken the day's first sample at once: theirs stands.
        insert_ignoring_conflict(
            conn,
            filesystem_usage,
            agent_id=agent_id,
            mountpoint=mountpoint,
            day=day,
            sampled_at=at,
            size_bytes=size,
            used_bytes=used,
        )
        conn.execute(
            delete(filesystem_usage).where(
                filesystem_usage.c.agent_id == agent_id,
                filesystem_usage.c.mountpoint == mountpoint,
                filesystem_usage.c.day < day - FS_USAGE_DAYS,
            )
        )
