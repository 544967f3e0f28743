"""Live state: every agent's latest values and a short window of points per series.

Held in the collector's memory only; it is rebuilt from the agents' next reports after a
restart. Times are the collector's clock (agent timestamps corrected by the offset
measured at Hello), so windows and liveness never depend on an office PC's clock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tripline.alerts.engine import SeriesData
from tripline.collector.interning import series_key
from tripline.common.labels import Labels

SeriesKey = tuple[str, Labels]
Points = list[tuple[float, float]] | tuple[tuple[float, float]]


@dataclass(slots=True)  # one per agent: slots, not a 17-key __dict__ (~500 bytes less)
class AgentLive:
    agent_id: str
    customer: str
    hostname: str
    site: str
    last_seen: float | None = None  # collector clock, last report received
    last_collected_at: float | None = None  # agent clock, as sent
    connected: bool = False
    instance_id: str = ""
    dropped_reports_total: int = 0
    reports_applied: int = 0
    last_point_at: float | None = None  # collector time of the newest report's points
    grace_until: float = 0.0  # presumed alive until then (a collector restart's grace)
    # series key -> points (collector time, value), oldest first: a list for a series
    # that keeps a window, a 1-tuple for one that keeps only its latest point (most of
    # them: 64 bytes where a list takes 120, and nothing to reallocate per report)
    series: dict[SeriesKey, Points] = field(default_factory=dict)
    # keys present in the latest report: what is exposed and evaluated
    current: set[SeriesKey] = field(default_factory=set)
    context: Mapping[str, Any] = field(default_factory=dict)
    # series gone from the latest report -> collector time they were last received; they
    # count under the series cap until the window has passed on the collector's clock
    gone: dict[SeriesKey, float] = field(default_factory=dict)
    last_received: float | None = None  # collector clock, last report recorded

    def latest(self) -> Iterator[tuple[str, Labels, float]]:
        for key in self.current:
            points = self.series.get(key)
            if points:
                yield key[0], key[1], points[-1][1]

    def value(self, name: str, **labels: str) -> float | None:
        points = self.series.get((name, tuple(sorted(labels.items()))))
        if points and (name, tuple(sorted(labels.items()))) in self.current:
            return points[-1][1]
        return None


# A windowed series keeps about this many points over its window, whatever the interval.
POINTS_PER_WINDOW = 60


class LiveState:
    """Agents by id. ``window`` bounds how much history a series keeps (seconds).

    ``staleness``: a series missing from the latest report still counts for rule
    evaluation while its last point is this recent, so one failed probe in one
    collection does not resolve (and then reopen) every ticket on that series.
    """

    def __init__(
        self,
        window: float,
        max_points: int = 720,
        staleness: float = 30.0,
        retention: Mapping[str, float] | None = None,
    ) -> None:
        self.window = window
        self.max_points = max_points
        self.staleness = staleness
        self.agents: dict[str, AgentLive] = {}
        self.set_retention(retention)

    def set_retention(self, retention: Mapping[str, float] | None) -> None:
        """How much history each metric keeps: ``{metric: seconds}`` from the rules' windows.

        With a map, a metric no rule aggregates keeps only its latest point, and a long
        window keeps about ``POINTS_PER_WINDOW`` points spaced over it (the newest point
        is always kept): memory per agent stays small at any interval. None keeps every
        point of every series for ``window`` seconds.
        """
        self.retention = None if retention is None else dict(retention)

    def ensure(self, agent_id: str, *, customer: str, hostname: str, site: str) -> AgentLive:
        live = self.agents.get(agent_id)
        if live is None:
            live = AgentLive(agent_id=agent_id, customer=customer, hostname=hostname, site=site)
            self.agents[agent_id] = live
        else:
            live.hostname = hostname or live.hostname
            live.site = site
        return live

    def forget(self, agent_id: str) -> None:
        self.agents.pop(agent_id, None)

    def record(
        self,
        live: AgentLive,
        at: float,
        samples: Iterable[tuple[str, Labels, float]],
        received: float | None = None,
    ) -> None:
        """Add one report's samples at collector time ``at``.

        A point at the same time as the series' last one replaces it, so a report
        re-applied after a failed commit does not count twice in a window.

        ``received`` is the collector's clock when the report arrived (default ``at``).
        A series the agent stops sending is forgotten once it has not been *received*
        for ``window`` seconds: the agent's own timestamps (``at`` derives from them)
        neither keep it nor drop it sooner, so stepping them cannot churn series past
        the cap (:func:`collector.limits.cap_series` counts ``live.series``).
        """
        if received is None:
            received = at
        retention = self.retention
        current: set[SeriesKey] = set()
        for name, labels, value in samples:
            key = (name, labels)
            points = live.series.get(key)
            if points is None:
                key = series_key(name, labels)  # held as long as the series: the shared one
                points = live.series[key] = []
            current.add(key)
            if points and points[-1][0] >= at:
                if points[-1][0] == at:
                    if isinstance(points, tuple):
                        live.series[key] = ((at, value),)
                    else:
                        points[-1] = (at, value)
                continue  # out of order (late replay): the window keeps time order
            if retention is None:
                keep, spacing = self.window, 0.0
            else:
                keep = retention.get(name, 0.0)
                spacing = keep / POINTS_PER_WINDOW
            if keep <= 0:
                # Only the latest point: every older one is before `at` (checked above).
                live.series[key] = ((at, value),)
                continue
            if isinstance(points, tuple):
                points = live.series[key] = list(points)  # its metric gained a window
            if points and spacing and at // spacing == points[-1][0] // spacing:
                points[-1] = (at, value)  # one point per spacing bucket: the newest wins
            else:
                points.append((at, value))
            start = at - keep
            drop = 0
            while drop < len(points) - 1 and points[drop][0] < start:
                drop += 1
            drop = max(drop, len(points) - self.max_points)
            if drop:
                del points[:drop]
        previous = live.current
        if current == previous:
            # The usual report: keep the set built when these series first came, whose
            # keys the series map holds, rather than one more key object per series.
            current = previous
        live.current = current
        if live.last_point_at is None or at > live.last_point_at:
            live.last_point_at = at
        # Series gone from the agent (a USB disk unplugged) are forgotten once they have
        # not been received for the window, on the collector's clock.
        last_received = received if live.last_received is None else live.last_received
        gone = live.gone
        for key in previous:
            if key not in current:
                gone.setdefault(key, last_received)
        live.last_received = max(received, live.last_received or received)
        expired = received - self.window
        for key, since in list(gone.items()):
            if key in current:
                del gone[key]
            elif since < expired or key not in live.series:
                del gone[key]
                live.series.pop(key, None)

    def series_data(
        self, live: AgentLive, metrics: Collection[str] | None = None
    ) -> list[SeriesData]:
        """The series rules see: those of the latest report, plus briefly missing ones.

        ``metrics`` limits them to the names some rule reads, sparing the copies of the rest.
        """
        if live.last_point_at is None:
            return []
        fresh_after = live.last_point_at - self.staleness
        return [
            SeriesData(metric=key[0], labels=key[1], points=tuple(points))
            for key, points in live.series.items()
            if (metrics is None or key[0] in metrics)
            and points
            and (key in live.current or points[-1][0] >= fresh_after)
        ]
