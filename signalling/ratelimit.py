"""Per-client limits on call creation: concurrent calls and a set-up rate (token bucket).

A client is a `Principal.client_id`: a static token, a call token's subject, or an IP.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


class RateLimited(Exception):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> int:
        """Whole seconds for the Retry-After header (at least 1)."""
        return max(1, math.ceil(self.retry_after_s))


@dataclass
class _Bucket:
    tokens: float
    updated: float


class ClientLimiter:
    """`admit(client)` before negotiating (counts the call), `release(client)` when it ends."""

    CONCURRENCY_RETRY_S = 5.0
    MAX_BUCKETS = 10_000

    def __init__(self, max_concurrent: int, rate_per_minute: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_concurrent = max_concurrent
        self.rate_per_s = rate_per_minute / 60.0
        self.capacity = max(1.0, rate_per_minute)  # a full minute's worth may come at once
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._active: dict[str, int] = {}

    def active(self, client: str) -> int:
        return self._active.get(client, 0)

    def admit(self, client: str) -> None:
        """Count a new call for `client`, or raise RateLimited (nothing is counted then)."""
        if self.active(client) >= self.max_concurrent:
            raise RateLimited(
                f"at most {self.max_concurrent} concurrent calls per client",
                self.CONCURRENCY_RETRY_S,
            )
        self._take_token(client)
        self._active[client] = self.active(client) + 1

    def take(self, client: str) -> None:
        """One token of `client`'s rate (no concurrency counted), or RateLimited."""
        self._take_token(client)

    def release(self, client: str) -> None:
        left = self.active(client) - 1
        if left > 0:
            self._active[client] = left
        else:
            self._active.pop(client, None)

    def _take_token(self, client: str) -> None:
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[client] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated)
                                * self.rate_per_s)
            bucket.updated = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / self.rate_per_s
            raise RateLimited("too many calls started; slow down", wait)
        bucket.tokens -= 1.0

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (they are equal to a fresh one)."""
        full_after = self.capacity / self.rate_per_s
        self._buckets = {c: b for c, b in self._buckets.items() if now - b.updated < full_after}
