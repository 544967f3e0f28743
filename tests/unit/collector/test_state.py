"""collector/state.py: the live window of points per series, and what counts as current."""

from __future__ import annotations

import pytest

from tripline.alerts.engine import SeriesData
from tripline.collector.state import AgentLive, LiveState

T0 = 1_700_000_000.0
ROOT = (("device", "/dev/sda1"), ("fstype", "ext4"), ("mountpoint", "/"))
USB = (("device", "/dev/sdb1"), ("fstype", "vfat"), ("mountpoint", "/media/usb"))


@pytest.fixture
def state() -> LiveState:
    return LiveState(window=60.0)


@pytest.fixture
def live(state: LiveState) -> AgentLive:
    return state.ensure("a-1", customer="acme", hostname="pc-01", site="hq")


def points(live: AgentLive, name: str, labels: tuple[tuple[str, str], ...] = ()) -> list:
    return list(live.series[(name, labels)])


def test_window_keeps_points_back_to_now_minus_window(state: LiveState, live: AgentLive) -> None:
    for offset, value in [(0, 1.0), (30, 2.0), (60, 3.0)]:
        state.record(live, T0 + offset, [("load1", (), value)])
    # the point exactly one window old is still inside
    assert points(live, "load1") == [(T0, 1.0), (T0 + 30, 2.0), (T0 + 60, 3.0)]
    state.record(live, T0 + 61, [("load1", (), 4.0)])
    assert points(live, "load1") == [(T0 + 30, 2.0), (T0 + 60, 3.0), (T0 + 61, 4.0)]
    state.record(live, T0 + 200, [("load1", (), 5.0)])
    assert points(live, "load1") == [(T0 + 200, 5.0)]


def test_max_points_bounds_a_series() -> None:
    state = LiveState(window=3600.0, max_points=3)
    live = state.ensure("a-1", customer="acme", hostname="pc-01", site="hq")
    for i in range(5):
        state.record(live, T0 + i, [("load1", (), float(i))])
    assert points(live, "load1") == [(T0 + 2, 2.0), (T0 + 3, 3.0), (T0 + 4, 4.0)]


def test_same_time_replaces_the_last_point(state: LiveState, live: AgentLive) -> None:
    state.record(live, T0, [("load1", (), 1.0)])
    state.record(live, T0 + 10, [("load1", (), 2.0)])
    # a report re-applied after a failed commit lands at the same collector time
    state.record(live, T0 + 10, [("load1", (), 2.5)])
    assert points(live, "load1") == [(T0, 1.0), (T0 + 10, 2.5)]
    assert live.value("load1") == 2.5


def test_out_of_order_point_is_ignored(state: LiveState, live: AgentLive) -> None:
    state.record(live, T0 + 10, [("load1", (), 2.0)])
    state.record(live, T0 + 20, [("load1", (), 3.0)])
    state.record(live, T0 + 15, [("load1", (), 9.0), ("load5", (), 1.0)])
    assert points(live, "load1") == [(T0 + 10, 2.0), (T0 + 20, 3.0)]
    # a new series in the late report still starts
    assert points(live, "load5") == [(T0 + 15, 1.0)]
    assert live.value("load1") == 3.0


def test_latest_and_value_follow_the_newest_report(state: LiveState, live: AgentLive) -> None:
    state.record(
        live,
        T0,
        [("filesystem_used_ratio", ROOT, 0.5), ("filesystem_used_ratio", USB, 0.1),
         ("load1", (), 0.3)],
    )  # fmt: skip
    state.record(live, T0 + 10, [("filesystem_used_ratio", ROOT, 0.6), ("load1", (), 0.4)])
    assert sorted(live.latest()) == [
        ("filesystem_used_ratio", ROOT, 0.6),
        ("load1", (), 0.4),
    ]
    # labels in any order name the same series
    assert (
        live.value("filesystem_used_ratio", mountpoint="/", fstype="ext4", device="/dev/sda1")
        == 0.6
    )
    # the USB disk is not in the latest report: not current, though its points remain
    assert live.value("filesystem_used_ratio", **dict(USB)) is None
    assert ("filesystem_used_ratio", USB) in live.series
    assert live.value("memory_used_ratio") is None


def test_series_gone_from_the_agent_drops_out_after_the_window(
    state: LiveState, live: AgentLive
) -> None:
    state.record(live, T0, [("filesystem_used_ratio", USB, 0.1), ("load1", (), 0.3)])
    state.record(live, T0 + 60, [("load1", (), 0.4)])
    assert ("filesystem_used_ratio", USB) in live.series  # last point still in the window
    state.record(live, T0 + 61, [("load1", (), 0.5)])
    assert ("filesystem_used_ratio", USB) not in live.series
    assert set(live.series) == {("load1", ())}


def test_series_data_keeps_a_briefly_missing_series_until_stale(live: AgentLive) -> None:
    state = LiveState(window=600.0, staleness=30.0)
    state.record(live, T0, [("filesystem_used_ratio", USB, 0.1), ("load1", (), 0.3)])
    # one collection without the USB disk (a failed probe): rules still see it
    state.record(live, T0 + 10, [("load1", (), 0.4)])
    assert sorted(s.metric for s in state.series_data(live)) == ["filesystem_used_ratio", "load1"]
    # missing for longer than the staleness: gone for the rules
    state.record(live, T0 + 31, [("load1", (), 0.5)])
    assert state.series_data(live) == [
        SeriesData(metric="load1", labels=(), points=((T0, 0.3), (T0 + 10, 0.4), (T0 + 31, 0.5)))
    ]
    # exposition shows only the latest report's series
    assert [name for name, _, _ in live.latest()] == ["load1"]


def test_ensure_updates_host_and_site_and_forget_removes(state: LiveState) -> None:
    first = state.ensure("a-1", customer="acme", hostname="pc-01", site="hq")
    state.record(first, T0, [("load1", (), 1.0)])
    again = state.ensure("a-1", customer="acme", hostname="pc-01-renamed", site="branch")
    assert again is first
    assert (again.hostname, again.site) == ("pc-01-renamed", "branch")
    # an empty hostname (Hello without one) keeps the known name
    assert state.ensure("a-1", customer="acme", hostname="", site="branch").hostname == (
        "pc-01-renamed"
    )
    assert again.value("load1") == 1.0
    state.forget("a-1")
    state.forget("a-1")
    assert state.agents == {}


def test_retention_bounds_history_per_metric_and_keeps_the_newest_point() -> None:
    state = LiveState(window=3600.0, retention={"filesystem_avail_bytes": 3600.0})
    live = state.ensure("a-1", customer="acme", hostname="pc-01", site="hq")
    for i in range(720):  # two hours at a 10 s interval
        t = T0 + 10 * i
        state.record(live, t, [("filesystem_avail_bytes", ROOT, float(i)), ("load1", (), float(i))])
    fs = live.series[("filesystem_avail_bytes", ROOT)]
    # about one point a minute over the last hour, the newest last
    assert 55 <= len(fs) <= 62
    assert fs[-1] == (T0 + 7190, 719.0)
    assert fs[0][0] >= T0 + 7190 - 3600
    assert all(b[0] - a[0] >= 60 for a, b in zip(list(fs)[:-2], list(fs)[1:-1], strict=True))
    # a metric no rule aggregates keeps its latest point only
    assert list(live.series[("load1", ())]) == [(T0 + 7190, 719.0)]


def test_series_the_agent_stops_sending_leave_after_the_window_of_collector_time(
    state: LiveState, live: AgentLive
) -> None:
    # The agent's clock steps back a long way after the series goes missing: the series
    # still leaves one window after it was last *received*, and not sooner.
    state.record(live, T0, [("load1", (), 1.0), ("filesystem_used_ratio", USB, 0.5)])
    state.record(live, T0 - 10_000, [("load1", (), 1.0)], received=T0 + 10)
    state.record(live, T0 - 9_000, [("load1", (), 1.0)], received=T0 + 59)
    assert ("filesystem_used_ratio", USB) in live.series
    state.record(live, T0 - 8_000, [("load1", (), 1.0)], received=T0 + 61)
    assert ("filesystem_used_ratio", USB) not in live.series
    assert not live.gone
    assert set(live.series) == {("load1", ())}


def test_a_series_back_before_the_window_ends_is_kept(state: LiveState, live: AgentLive) -> None:
    state.record(live, T0, [("filesystem_used_ratio", USB, 0.5)])
    state.record(live, T0 + 10, [])
    state.record(live, T0 + 20, [("filesystem_used_ratio", USB, 0.6)])
    state.record(live, T0 + 100, [("filesystem_used_ratio", USB, 0.7)])
    assert points(live, "filesystem_used_ratio", USB)[-1] == (T0 + 100, 0.7)
    assert not live.gone
