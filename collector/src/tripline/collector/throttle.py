"""Slowing down guessing: a growing wait after repeated failures, per key.

The Enroll handler keys failures by peer address (a wrong token tells nothing else) and by
token (a known token refused as revoked, expired or used up). The first `free` failures
cost nothing, so a person mistyping a token is not punished; after that each failure
doubles the wait, up to `maximum`. A key quiet for `forget_after` starts afresh. Pure: the
caller passes the (monotonic) time in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

# Failures before any wait; then 1 s, 2 s, 4 s ... up to a minute: a guesser gets about
# one try a minute per address, a PC behind the same NAT retries within a minute.
FREE_FAILURES = 5
BASE_DELAY = 1.0
MAX_DELAY = 60.0
FORGET_AFTER = 900.0
# Keys remembered at most; the least recently failed are forgotten first.
MAX_KEYS = 100_000


@dataclass
class _Record:
    failures: int
    last_failure: float
    blocked_until: float


class FailureThrottle:
    def __init__(
        self,
        *,
        free: int = FREE_FAILURES,
        base: float = BASE_DELAY,
        maximum: float = MAX_DELAY,
        forget_after: float = FORGET_AFTER,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.free = free
        self.base = base
        self.maximum = maximum
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._records: OrderedDict[Hashable, _Record] = OrderedDict()

    def wait(self, key: Hashable, now: float) -> float:
        """Seconds `key` must still wait before it may try again (0: it may now)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        if now - record.last_failure >= self.forget_after:
            del self._records[key]
            return 0.0
        return max(0.0, record.blocked_until - now)

    def failed(self, key: Hashable, now: float) -> float:
        """Record a failure of `key`; returns the wait it now has (0 while still free)."""
        record = self._records.pop(key, None)
        if record is None or now - record.last_failure >= self.forget_after:
            record = _Record(0, now, now)
        record.failures += 1
        record.last_failure = now
        over = record.failures - self.free
        delay = 0.0 if over <= 0 else min(self.maximum, self.base * 2.0 ** min(over - 1, 32))
        record.blocked_until = now + delay
        self._records[key] = record
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)
        return delay

    def forget(self, key: Hashable) -> None:
        """Drop what `key` failed (it starts afresh)."""
        self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)
