"""Per-agent limits: how fast an agent may send reports, how many series it may have.

Pure bookkeeping with time passed in; the servicer decides what the agent is told.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from tripline.common.labels import Labels

SeriesKey = tuple[str, Labels]
Sample = tuple[str, Labels, float]


class RateLimited(Exception):
    """An agent sent a report with its bucket empty; ``retry_after`` is whole seconds."""

    def __init__(self, agent_id: str, retry_after: int) -> None:
        self.agent_id = agent_id
        self.retry_after = retry_after
        super().__init__(f"agent {agent_id} is over its report rate; retry after {retry_after}s")


@dataclass
class _Bucket:
    tokens: float
    updated: float


class ReportRateLimiter:
    """A token bucket per agent: ``burst`` reports at once, then ``rate`` per second.

    The bucket outlives the stream, so reconnecting does not refill it. A refused agent
    is told to come back when its bucket is half full again: it then replays ``burst / 2``
    reports on one stream rather than reconnecting for every token.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, agent_id: str, now: float) -> None:
        """Spend one token of ``agent_id``'s bucket; raise RateLimited when it is empty."""
        bucket = self._buckets.get(agent_id)
        if bucket is None:
            bucket = self._buckets[agent_id] = _Bucket(tokens=float(self.burst), updated=now)
        # A clock step backwards must not drain the bucket.
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        refill = (max(1.0, self.burst / 2) - bucket.tokens) / self.rate
        raise RateLimited(agent_id, max(1, math.ceil(refill)))

    def tokens(self, agent_id: str, now: float) -> float:
        """Reports ``agent_id`` could send at ``now`` without being refused."""
        bucket = self._buckets.get(agent_id)
        if bucket is None:
            return float(self.burst)
        return min(float(self.burst), bucket.tokens + max(0.0, now - bucket.updated) * self.rate)

    def forget(self, agent_id: str) -> None:
        self._buckets.pop(agent_id, None)


@dataclass(frozen=True)
class Capped:
    """A report's samples after the series cap; ``dropped`` counts the refused ones."""

    samples: tuple[Sample, ...]
    dropped: int


def cap_series(known: Collection[SeriesKey], samples: Sequence[Sample], limit: int) -> Capped:
    """Keep every sample of a series in ``known`` and of new series while the agent has
    fewer than ``limit`` series, taking new ones in the order the agent sent them.

    ``known`` is the agent's live series: a series gone from its reports leaves it once
    its last point is older than the live window, which frees its place under the cap.
    """
    room = limit - len(known)
    if room >= len(samples):
        # Nothing can be dropped: skip the per-sample membership test (the usual case).
        return Capped(tuple(samples), 0)
    kept: list[Sample] = []
    dropped = 0
    for sample in samples:
        if (sample[0], sample[1]) in known:
            kept.append(sample)
        elif room > 0:
            kept.append(sample)
            room -= 1
        else:
            dropped += 1
    if not dropped:
        return Capped(tuple(samples), 0)
    return Capped(tuple(kept), dropped)


class KeyedRateLimiter(ReportRateLimiter):
    """A token bucket per key whose keys an attacker may choose (peer addresses).

    At most ``max_keys`` buckets are kept: past it, buckets that have refilled are
    dropped first (a full bucket is what a new key gets anyway), then the least recently
    used half. Memory stays bounded whatever addresses a flood comes from; a key dropped
    early only gets a fresh bucket.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        super().__init__(rate, burst)
        self.max_keys = max_keys

    def take(self, key: str, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._prune(now)
        super().take(key, now)

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        for key in [k for k in self._buckets if self.tokens(k, now) >= self.burst]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            for key in by_age[: len(by_age) // 2 + 1]:
                del self._buckets[key]


class LogThrottle:
    """Say a repeated event once per ``every`` seconds per key, with how many were
    swallowed since: a flood of refusals or accept errors must not flood the log."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None: stay quiet this time. Otherwise log now; the int counts the events
        swallowed since the last line of ``key``."""
        last = self._last.get(key)
        if last is not None and 0.0 <= now - last < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string without the port: ``ipv4:1.2.3.4:5`` ->
    ``1.2.3.4``, ``ipv6:[::1]:5`` -> ``::1``; other forms (unix sockets) unchanged."""
    kind, sep, rest = peer.partition(":")
    if not sep or kind not in {"ipv4", "ipv6"}:
        return peer
    rest = urllib.parse.unquote(rest)  # newer gRPC writes ipv6:%5B::1%5D:5
    if rest.startswith("["):
        return rest[1:].partition("]")[0]
    return rest.rpartition(":")[0] or rest
