"""What the report is computed from (read from the store) and what it holds.

Plain frozen dataclasses: `load.read_input` fills the first kind, `compute.compute` turns
them into a `Report`, and the renderers read only a `Report`. Times are unix seconds on
the collector's clock; durations in hours or seconds as the field name says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# -- input ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentRow:
    agent_id: str
    hostname: str
    site: str
    os: str
    created_at: float
    revoked_at: float | None
    last_seen_at: float | None


@dataclass(frozen=True)
class SpanRow:
    agent_id: str
    started_at: float
    ended_at: float
    boot_time: float | None


@dataclass(frozen=True)
class TicketRow:
    ticket_id: int
    agent_id: str
    hostname: str
    rule: str
    severity: str
    tier: int  # now


@dataclass(frozen=True)
class EventRow:
    ticket_id: int
    seq: int
    at: float
    kind: str
    actor: str
    from_tier: int | None = None  # escalated events only
    to_tier: int | None = None


@dataclass(frozen=True)
class FsSample:
    agent_id: str
    mountpoint: str
    sampled_at: float
    size_bytes: float
    used_bytes: float


@dataclass(frozen=True)
class ReportInput:
    customer: str
    start: float
    end: float
    agents: tuple[AgentRow, ...]
    spans: tuple[SpanRow, ...]
    tickets: tuple[TicketRow, ...]
    events: tuple[EventRow, ...]  # of those tickets, before `end`
    filesystems: tuple[FsSample, ...]
    memory_rules: frozenset[str]
    # presence spans are kept from then on (migration 5); None: not at all
    history_since: float | None
    gap: float  # silence that ends a presence span (the offline threshold)
    # when the report is made: a period still running expects reports only until then
    now: float


# -- output ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PcRow:
    agent_id: str
    hostname: str
    site: str
    os: str
    last_seen_at: float | None
    expected_hours: float
    online_hours: float
    availability: float | None  # online / expected; None when nothing was expected


@dataclass(frozen=True)
class Fleet:
    pcs: tuple[PcRow, ...]
    by_site: dict[str, int]
    by_os: dict[str, int]
    availability: float | None  # over the whole fleet


@dataclass(frozen=True)
class TierTimes:
    tier: int
    acknowledged: int
    mtta_median_s: float | None
    mtta_p90_s: float | None
    resolved: int
    mttr_median_s: float | None
    mttr_p90_s: float | None


@dataclass(frozen=True)
class Count:
    name: str
    count: int
    detail: str = ""  # e.g. the agent id of a busy PC, a rule's auto-resolved share


@dataclass(frozen=True)
class Week:
    starts: str  # YYYY-MM-DD, a Monday (UTC)
    by_severity: dict[str, int]


@dataclass(frozen=True)
class Tickets:
    opened: int
    by_rule: dict[str, int]
    by_tier: dict[str, int]  # the tier each started at
    by_severity: dict[str, int]
    outcomes: dict[str, int]  # auto_resolved, first_line, higher_tier, escalated, open
    auto_resolved_share: float | None
    times: tuple[TierTimes, ...]
    busiest_pcs: tuple[Count, ...]
    top_rules: tuple[Count, ...]
    weeks: tuple[Week, ...]


@dataclass(frozen=True)
class DiskRow:
    agent_id: str
    hostname: str
    mountpoint: str
    size_bytes: float
    used_bytes: float
    growth_bytes_per_day: float
    days_to_full: float | None  # from the period's end; None: not filling
    samples: int
    points: tuple[tuple[float, float], ...] = field(default=(), repr=False)  # (at, used ratio)


@dataclass(frozen=True)
class HoursRow:
    agent_id: str
    hostname: str
    hours: float
    count: int  # memory tickets, or reboots
    last_at: float | None = None


@dataclass(frozen=True)
class Plan:
    disks_full_soon: tuple[DiskRow, ...]
    fullest_disks: tuple[DiskRow, ...]  # the chart's: highest used share first
    short_of_memory: tuple[HoursRow, ...]  # hours a memory/swap ticket was open
    reboots: tuple[HoursRow, ...]  # count: unexpected reboots
    offline: tuple[HoursRow, ...]  # hours offline when expected to report


@dataclass(frozen=True)
class Report:
    customer: str
    start: float
    end: float
    history_since: float | None
    fleet: Fleet
    tickets: Tickets
    plan: Plan
