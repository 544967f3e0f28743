"""Per-agent limits as pure functions of (state, now): token bucket and series cap."""

from __future__ import annotations

import pytest

from tripline.collector.config import ConfigError, load_collector_config
from tripline.collector.limits import RateLimited, ReportRateLimiter, cap_series

T0 = 1000.0


def take_all(limiter: ReportRateLimiter, agent: str, now: float, count: int) -> int:
    """How many of ``count`` back-to-back reports at ``now`` are admitted."""
    admitted = 0
    for _ in range(count):
        try:
            limiter.take(agent, now)
        except RateLimited:
            break
        admitted += 1
    return admitted


def test_burst_then_refused_with_time_until_half_full() -> None:
    limiter = ReportRateLimiter(rate=5.0, burst=50)
    assert take_all(limiter, "a", T0, 100) == 50
    with pytest.raises(RateLimited) as err:
        limiter.take("a", T0)
    # 25 tokens at 5/s: 5 s
    assert err.value.retry_after == 5
    assert err.value.agent_id == "a"


def test_refill_is_rate_times_elapsed_capped_at_burst() -> None:
    limiter = ReportRateLimiter(rate=5.0, burst=50)
    take_all(limiter, "a", T0, 50)
    assert take_all(limiter, "a", T0 + 1.0, 100) == 5
    assert take_all(limiter, "a", T0 + 1.1, 100) == 0
    assert limiter.tokens("a", T0 + 1000.0) == 50.0
    assert take_all(limiter, "a", T0 + 1000.0, 100) == 50


def test_agents_have_separate_buckets() -> None:
    limiter = ReportRateLimiter(rate=1.0, burst=3)
    assert take_all(limiter, "a", T0, 10) == 3
    assert take_all(limiter, "b", T0, 10) == 3
    limiter.forget("a")
    assert take_all(limiter, "a", T0, 10) == 3


def test_honouring_retry_after_admits_half_a_burst() -> None:
    limiter = ReportRateLimiter(rate=2.0, burst=10)
    take_all(limiter, "a", T0, 10)
    with pytest.raises(RateLimited) as err:
        limiter.take("a", T0)
    assert err.value.retry_after == 3  # ceil(5 tokens / 2 per s)
    assert take_all(limiter, "a", T0 + err.value.retry_after, 100) == 6


def test_sustained_rate_over_a_minute() -> None:
    limiter = ReportRateLimiter(rate=5.0, burst=50)
    # an agent replaying a backlog as fast as it may: one try every 10 ms for 60 s
    admitted = sum(take_all(limiter, "a", T0 + step / 100, 1) for step in range(6000))
    assert admitted == 50 + 5 * 59 + 4  # the burst, then 5/s (the last 10 ms short of one)


def test_a_clock_step_backwards_neither_refills_nor_drains() -> None:
    limiter = ReportRateLimiter(rate=1.0, burst=2)
    take_all(limiter, "a", T0, 2)
    assert take_all(limiter, "a", T0 - 100.0, 5) == 0
    assert take_all(limiter, "a", T0 - 99.0, 5) == 1


def test_retry_after_is_at_least_one_second() -> None:
    limiter = ReportRateLimiter(rate=100.0, burst=1)
    limiter.take("a", T0)
    with pytest.raises(RateLimited) as err:
        limiter.take("a", T0)
    assert err.value.retry_after == 1


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        ReportRateLimiter(rate=rate, burst=burst)


def s(
    name: str, value: float = 1.0, **labels: str
) -> tuple[str, tuple[tuple[str, str], ...], float]:
    return (name, tuple(sorted(labels.items())), value)


def test_known_series_always_pass_new_ones_until_the_cap() -> None:
    known = {("a", ()), ("b", ())}
    samples = [s("a"), s("new1"), s("b"), s("new2"), s("new3")]
    capped = cap_series(known, samples, limit=4)
    assert [x[0] for x in capped.samples] == ["a", "new1", "b", "new2"]
    assert capped.dropped == 1


def test_under_the_cap_returns_the_samples_unchanged() -> None:
    samples = [s("a"), s("b", device="sda")]
    capped = cap_series(set(), samples, limit=2)
    assert capped.samples == tuple(samples)
    assert capped.dropped == 0


def test_labels_make_a_new_series() -> None:
    known = {("fs", (("mountpoint", "/"),))}
    samples = [s("fs", mountpoint="/"), s("fs", mountpoint="/mnt/usb")]
    capped = cap_series(known, samples, limit=1)
    assert capped.samples == (s("fs", mountpoint="/"),)
    assert capped.dropped == 1


def test_over_the_cap_already_admits_only_known() -> None:
    known = {(f"m{i}", ()) for i in range(5)}
    capped = cap_series(known, [s("m0"), s("x")], limit=3)
    assert capped.samples == (s("m0"),)
    assert capped.dropped == 1


def test_limit_keys_defaults_and_errors() -> None:
    config = load_collector_config(None, environ={})
    assert config.max_series_per_agent == 2000
    assert config.max_reports_per_second_per_agent == 5.0
    assert config.max_report_burst_per_agent == 50
    assert config.max_streams == 50_000
    config = load_collector_config(
        None, environ={"TRIPLINE_COLLECTOR_MAX_REPORTS_PER_SECOND_PER_AGENT": "0.5"}
    )
    assert config.max_reports_per_second_per_agent == 0.5
    for value, reason in [
        ("0", "expected a positive number, got '0'"),
        ("fast", "expected a positive number, got 'fast'"),
        ("inf", "expected a positive number, got 'inf'"),
        ("nan", "expected a positive number, got 'nan'"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_collector_config(
                None, environ={"TRIPLINE_COLLECTOR_MAX_REPORTS_PER_SECOND_PER_AGENT": value}
            )
        assert str(err.value) == (
            "environment TRIPLINE_COLLECTOR_MAX_REPORTS_PER_SECOND_PER_AGENT: config key "
            f"'max_reports_per_second_per_agent': {reason}"
        )
    with pytest.raises(ConfigError, match="'max_streams': must be positive"):
        load_collector_config(None, environ={}, flags={"max_streams": 0})


def test_stepping_agent_time_cannot_churn_series_past_the_cap() -> None:
    """An agent alternating its timestamps a long way back and forth, with fresh series
    in every report: the cap counts what it sent within the window of *collector* time,
    so at most ``limit`` distinct series get in, and memory holds no more."""
    from tripline.collector.state import LiveState

    window, limit = 600.0, 50
    state = LiveState(window=window)
    live = state.ensure("a-1", customer="acme", hostname="pc", site="")
    admitted: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    now = T0
    for report in range(40):
        now += 1.0  # one report a second, well inside the window
        at = now - 100 * window if report % 2 else now  # the agent's stepped clock
        samples = [s(f"m{report}_{i}") for i in range(limit)]
        capped = cap_series(live.series, samples, limit)
        admitted.update((name, labels) for name, labels, _ in capped.samples)
        state.record(live, at, capped.samples, received=now)
        assert len(live.series) <= limit
    assert len(admitted) <= limit

    # Once the agent's old series have not been received for a window, new ones get in.
    now += window + 1.0
    state.record(live, now, [], received=now)
    capped = cap_series(live.series, [s("fresh")], limit)
    assert capped.dropped == 0


def test_keyed_limiter_keeps_its_keys_bounded_and_a_key_apart() -> None:
    from tripline.collector.limits import KeyedRateLimiter

    bucket = KeyedRateLimiter(rate=1.0, burst=2, max_keys=100)
    bucket.take("10.0.0.1", 0.0)
    bucket.take("10.0.0.1", 0.0)
    with pytest.raises(RateLimited):
        bucket.take("10.0.0.1", 0.0)
    bucket.take("10.0.0.2", 0.0)  # another address has its own bucket
    for i in range(10_000):  # a flood from ever new addresses
        bucket.take(f"2001:db8::{i:x}", i * 0.001)
    assert len(bucket) <= 100


def test_log_throttle_says_once_per_period_with_the_count_swallowed() -> None:
    from tripline.collector.limits import LogThrottle

    throttle = LogThrottle(every=10.0)
    assert throttle.allow("http", 0.0) == 0
    assert [throttle.allow("http", t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert throttle.allow("http", 10.0) == 3
    assert throttle.allow("grpc", 10.5) == 0


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:5555", "127.0.0.1"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:%5B2001:db8::1%5D:443", "2001:db8::1"),
        ("unix:/run/x.sock", "unix:/run/x.sock"),
    ],
)
def test_peer_host_drops_the_port(peer: str, host: str) -> None:
    from tripline.collector.limits import peer_host

    assert peer_host(peer) == host
