"""The report's figures: pure functions of a `ReportInput` (no clock, no store).

docs/reports.md says what each figure means; the comments here say why it is computed
the way it is.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tripline.collector.report.model import (
    Count,
    DiskRow,
    EventRow,
    Fleet,
    FsSample,
    HoursRow,
    PcRow,
    Plan,
    Report,
    ReportInput,
    SpanRow,
    TicketRow,
    Tickets,
    TierTimes,
    Week,
)

ENGINE_ACTOR = "tripline"  # ticketmodel.ENGINE_ACTOR, not imported: this module reads no store
SEVERITY_ORDER = ("critical", "warning", "info")
OUTCOMES = ("auto_resolved", "first_line", "higher_tier", "escalated", "open")
HOUR = 3600.0
DAY = 86400.0
FORECAST_DAYS = 90
FIT_MIN_SAMPLES = 3
FIT_MIN_SPAN = 2 * DAY
# A PC back within this after its boot time changed restarted (a crash, a forced update):
# a PC shut down for the night or the weekend is silent far longer.
RESTART_GAP = 1800.0
BOOT_JITTER = 120.0  # history.BOOT_JITTER
REPEATED_REBOOTS = 2
TOP = 10


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation between closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _union(intervals: Iterable[tuple[float, float]], joins: float) -> list[tuple[float, float]]:
    """Merge intervals that overlap or lie within `joins` seconds of each other."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + joins:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _overlap(intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(e, end) - max(s, start)) for s, e in intervals)


# -- fleet ----------------------------------------------------------------------------


def _fleet(data: ReportInput) -> tuple[Fleet, dict[str, float]]:
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for span in data.spans:
        spans[span.agent_id].append((span.started_at, span.ended_at))
    pcs: list[PcRow] = []
    offline: dict[str, float] = {}
    for agent in data.agents:
        # Expected to report from enrollment (and from when presence was first kept) to
        # revocation, within the period as far as it has happened (a report made mid-month
        # expects nothing of the days still to come).
        until = min(data.end, data.now)
        begin = max(data.start, agent.created_at, data.history_since or until)
        finish = min(until, agent.revoked_at if agent.revoked_at is not None else until)
        expected = max(0.0, finish - begin)
        online = _overlap(_union(spans[agent.agent_id], data.gap), begin, finish)
        pcs.append(
            PcRow(
                agent_id=agent.agent_id,
                hostname=agent.hostname,
                site=agent.site,
                os=agent.os,
                last_seen_at=agent.last_seen_at,
                expected_hours=expected / HOUR,
                online_hours=online / HOUR,
                availability=online / expected if expected > 0 else None,
            )
        )
        offline[agent.agent_id] = (expected - online) / HOUR
    expected_all = sum(pc.expected_hours for pc in pcs)
    fleet = Fleet(
        pcs=tuple(sorted(pcs, key=lambda pc: (pc.site, pc.hostname, pc.agent_id))),
        by_site=dict(sorted(Counter(pc.site or "(no site)" for pc in pcs).items())),
        by_os=dict(sorted(Counter(pc.os or "(unknown)" for pc in pcs).items())),
        availability=(
            sum(pc.online_hours for pc in pcs) / expected_all if expected_all > 0 else None
        ),
    )
    return fleet, offline


# -- tickets --------------------------------------------------------------------------


@dataclass
class Occurrence:
    """One life of a ticket, from opened or reopened to the next resolve (or the end)."""

    ticket: TicketRow
    opened_at: float
    acked_at: float | None = None
    resolved_at: float | None = None
    human: bool = False  # an operator acted before it resolved
    escalated: bool = False
    start_tier: int | None = None


def occurrences(tickets: Sequence[TicketRow], events: Sequence[EventRow]) -> list[Occurrence]:
    """Split each ticket's timeline into occurrences (a reopened ticket is one row)."""
    by_ticket: dict[int, list[EventRow]] = defaultdict(list)
    for event in events:
        by_ticket[event.ticket_id].append(event)
    found: list[Occurrence] = []
    for ticket in tickets:
        mine: list[Occurrence] = []
        for event in sorted(by_ticket[ticket.ticket_id], key=lambda e: e.seq):
            if event.kind in ("opened", "reopened"):
                mine.append(Occurrence(ticket, event.at))
                continue
            if not mine or mine[-1].resolved_at is not None:
                continue
            occ = mine[-1]
            person = event.actor != ENGINE_ACTOR
            if event.kind == "acknowledged" and occ.acked_at is None:
                occ.acked_at = event.at
            elif event.kind == "escalated" and event.from_tier is not None:
                if occ.start_tier is None:
                    occ.start_tier = event.from_tier
                occ.escalated |= (event.to_tier or 0) > event.from_tier
            elif event.kind == "resolved":
                occ.resolved_at = event.at
            occ.human |= person
        # Without a tier change the tier it has now is the one it started at; earlier
        # lives of a reopened ticket started at the tier its latest life started at.
        base = ticket.tier
        if mine and mine[-1].start_tier is not None:
            base = mine[-1].start_tier
        for occ in mine:
            if occ.start_tier is None:
                occ.start_tier = base
        found.extend(mine)
    return found


def outcome(occ: Occurrence) -> str:
    if occ.escalated:
        return "escalated"
    if occ.resolved_at is None:
        return "open"
    if not occ.human:
        return "auto_resolved"
    return "first_line" if occ.start_tier == 1 else "higher_tier"


def _monday(at: float) -> dt.date:
    day = dt.datetime.fromtimestamp(at, dt.UTC).date()
    return day - dt.timedelta(days=day.weekday())


def _weeks(occs: Sequence[Occurrence], start: float, end: float) -> tuple[Week, ...]:
    counts: dict[dt.date, Counter[str]] = {}
    monday = _monday(start)
    while monday < dt.datetime.fromtimestamp(end, dt.UTC).date():
        counts[monday] = Counter()
        monday += dt.timedelta(days=7)
    for occ in occs:
        counts.setdefault(_monday(occ.opened_at), Counter())[occ.ticket.severity] += 1
    return tuple(
        Week(day.isoformat(), {s: counts[day][s] for s in SEVERITY_ORDER}) for day in sorted(counts)
    )


def _tickets(occs: Sequence[Occurrence], start: float, end: float) -> Tickets:
    outcomes = Counter(outcome(o) for o in occs)
    times: list[TierTimes] = []
    for tier in (1, 2, 3):
        mine = [o for o in occs if o.start_tier == tier]
        ack = [o.acked_at - o.opened_at for o in mine if o.acked_at is not None]
        # Time to resolve counts what people worked on; what resolved on its own is the
        # auto-resolved share, and its duration says nothing of the service.
        fix = [o.resolved_at - o.opened_at for o in mine if o.resolved_at and o.human]
        times.append(
            TierTimes(
                tier,
                len(ack),
                percentile(ack, 0.5),
                percentile(ack, 0.9),
                len(fix),
                percentile(fix, 0.5),
                percentile(fix, 0.9),
            )
        )
    by_pc = Counter((o.ticket.hostname, o.ticket.agent_id) for o in occs)
    by_rule = Counter(o.ticket.rule for o in occs)
    auto_by_rule = Counter(o.ticket.rule for o in occs if outcome(o) == "auto_resolved")
    return Tickets(
        opened=len(occs),
        by_rule=dict(sorted(by_rule.items())),
        by_tier={str(t): sum(1 for o in occs if o.start_tier == t) for t in (1, 2, 3)},
        by_severity={s: sum(1 for o in occs if o.ticket.severity == s) for s in SEVERITY_ORDER},
        outcomes={name: outcomes[name] for name in OUTCOMES},
        auto_resolved_share=outcomes["auto_resolved"] / len(occs) if occs else None,
        times=tuple(times),
        busiest_pcs=tuple(
            Count(host, n, agent_id)
            for (host, agent_id), n in sorted(by_pc.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
        ),
        top_rules=tuple(
            Count(rule, n, f"{auto_by_rule[rule] / n:.0%} auto-resolved")
            for rule, n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
        ),
        weeks=_weeks(occs, start, end),
    )


# -- what to plan ---------------------------------------------------------------------


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y over x; needs two distinct x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x


def _disks(samples: Sequence[FsSample], names: dict[str, str], end: float) -> list[DiskRow]:
    series: dict[tuple[str, str], list[FsSample]] = defaultdict(list)
    for sample in samples:
        series[(sample.agent_id, sample.mountpoint)].append(sample)
    rows: list[DiskRow] = []
    for (agent_id, mountpoint), mine in sorted(series.items()):
        mine.sort(key=lambda s: s.sampled_at)
        last = mine[-1]
        if len(mine) < FIT_MIN_SAMPLES or last.sampled_at - mine[0].sampled_at < FIT_MIN_SPAN:
            continue
        slope, _ = fit_line([(s.sampled_at / DAY, s.used_bytes) for s in mine])
        days: float | None = None
        if slope > 0:
            full_at = last.sampled_at + (last.size_bytes - last.used_bytes) / slope * DAY
            days = max(0.0, (full_at - end) / DAY)
        rows.append(
            DiskRow(
                agent_id=agent_id,
                hostname=names.get(agent_id, agent_id),
                mountpoint=mountpoint,
                size_bytes=last.size_bytes,
                used_bytes=last.used_bytes,
                growth_bytes_per_day=slope,
                days_to_full=days,
                samples=len(mine),
                points=tuple((s.sampled_at, s.used_bytes / s.size_bytes) for s in mine),
            )
        )
    return rows


def _memory(
    occs: Sequence[Occurrence], rules: frozenset[str], start: float, end: float
) -> list[HoursRow]:
    hours: dict[tuple[str, str], list[float]] = defaultdict(list)
    for occ in occs:
        if occ.ticket.rule in rules:
            spent = _overlap([(occ.opened_at, occ.resolved_at or end)], start, end)
            hours[(occ.ticket.hostname, occ.ticket.agent_id)].append(spent / HOUR)
    rows = [HoursRow(agent, host, sum(h), len(h)) for (host, agent), h in hours.items()]
    return sorted(rows, key=lambda r: (-r.hours, r.hostname))


def _reboots(
    spans: Sequence[SpanRow], names: dict[str, str], start: float, end: float
) -> list[HoursRow]:
    by_agent: dict[str, list[SpanRow]] = defaultdict(list)
    for span in spans:
        by_agent[span.agent_id].append(span)
    rows: list[HoursRow] = []
    for agent_id, mine in by_agent.items():
        mine.sort(key=lambda s: s.started_at)
        restarts = [
            after.started_at
            for before, after in itertools.pairwise(mine)
            if start <= after.started_at < end
            and before.boot_time is not None
            and after.boot_time is not None
            and abs(after.boot_time - before.boot_time) > BOOT_JITTER
            and after.started_at - before.ended_at <= RESTART_GAP
        ]
        if len(restarts) >= REPEATED_REBOOTS:
            rows.append(
                HoursRow(agent_id, names.get(agent_id, agent_id), 0.0, len(restarts), restarts[-1])
            )
    return sorted(rows, key=lambda r: (-r.count, r.hostname))


def compute(data: ReportInput) -> Report:
    """The whole report for `data`'s customer and period."""
    fleet, offline_hours = _fleet(data)
    names = {a.agent_id: a.hostname for a in data.agents}
    occs = [
        o for o in occurrences(data.tickets, data.events) if data.start <= o.opened_at < data.end
    ]
    spanning = [o for o in occurrences(data.tickets, data.events) if o.opened_at < data.end]
    disks = _disks(data.filesystems, names, data.end)
    soon = [d for d in disks if d.days_to_full is not None and d.days_to_full <= FORECAST_DAYS]
    by_agent = {pc.agent_id: pc for pc in fleet.pcs}
    offline = [
        HoursRow(agent_id, by_agent[agent_id].hostname, hours, 0)
        for agent_id, hours in offline_hours.items()
        if hours > 0
    ]
    plan = Plan(
        disks_full_soon=tuple(sorted(soon, key=lambda d: (d.days_to_full or 0.0, d.hostname))),
        fullest_disks=tuple(sorted(disks, key=lambda d: -d.used_bytes / d.size_bytes)[:5]),
        short_of_memory=tuple(_memory(spanning, data.memory_rules, data.start, data.end)[:TOP]),
        reboots=tuple(_reboots(list(data.spans), names, data.start, data.end)[:TOP]),
        offline=tuple(sorted(offline, key=lambda r: (-r.hours, r.hostname))[:TOP]),
    )
    return Report(
        customer=data.customer,
        start=data.start,
        end=data.end,
        history_since=data.history_since,
        fleet=fleet,
        tickets=_tickets(occs, data.start, data.end),
        plan=plan,
    )
