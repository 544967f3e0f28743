"""One agent's stream after Hello, and the collector time each of its reports counts at.

The agent's clock never decides ticket times: `report_time` trusts it only for the
spacing of the agent's own reports, bounded by what the collector saw pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tripline.collector.convert import Report
from tripline.collector.state import AgentLive
from tripline.collector.store import AgentRecord, InstancePosition


class ReportTimeRefused(Exception):
    """A report's time cannot be taken: in the future or before the instance's previous
    report. `reason` labels tripline_collector_reports_rejected_total."""

    def __init__(self, seq: int, reason: str, message: str) -> None:
        super().__init__(f"report seq {seq}: {message}")
        self.seq = seq
        self.reason = reason


@dataclass(slots=True)  # one per connected agent
class Session:
    """One agent's Connect stream after Hello."""

    agent: AgentRecord
    instance_id: str
    applied_seq: int
    clock_offset: float  # collector clock minus agent clock, measured at Hello
    live: AgentLive
    # the last applied report (see InstancePosition): its collection time on this
    # instance's clock, the agent's latest report time and when it was received
    position: InstancePosition = field(default_factory=InstancePosition)


def report_time(
    session: Session, report: Report, now: float, *, max_clock_skew: float, interval: float
) -> float:
    """The collector time a report is evaluated at; raises ReportTimeRefused.

    The agent's clock (corrected by the offset measured at Hello) is trusted only for
    the spacing of its own reports, so a backlog replayed after an outage is evaluated
    at the times it was collected. It never decides ticket times beyond that:

    - later than now plus `max_clock_skew`: refused; within it, taken as now;
    - before the previous report of the instance on its own clock: refused;
    - never before the agent's enrollment, nor before its latest report plus the time
      the collector saw pass since it received that report (up to one interval, the
      spacing of a backlog): history can be claimed only for time the collector did
      not hear from the agent, so stepping timestamps cannot make a `for` elapse
      faster than the collector's clock.
    """
    at = report.collected_at + session.clock_offset
    skew = max_clock_skew
    if not at <= now + skew:
        raise ReportTimeRefused(
            report.seq,
            "report_time_future",
            f"collected_at_seconds is {at - now:.0f}s ahead of the collector's clock "
            f"(after the offset measured at Hello), more than max_clock_skew={skew:g}s: "
            "check the agent's clock; the agent drops this report and reconnects",
        )
    previous = session.position
    if previous.collected_at is not None and report.collected_at < previous.collected_at:
        back = previous.collected_at - report.collected_at
        raise ReportTimeRefused(
            report.seq,
            "report_time_backwards",
            f"collected_at_seconds goes back {back:.3f}s "
            "before this instance's previous report: the agent's clock stepped back "
            "(or the report is forged); the agent drops it",
        )
    floor = session.agent.created_at
    if previous.report_at is not None and previous.received_at is not None:
        heard = max(0.0, now - previous.received_at)
        floor = max(floor, previous.report_at + min(heard, interval))
    return min(max(at, floor), now)
