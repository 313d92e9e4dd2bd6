"""Admission from measured capacity: the call that would push answers past the budget is
refused before it slows the calls in progress.

The capacity is how many *talking* calls this node holds with replies within
`capacity.latency_budget_ms`. It is configured (`capacity.calls`, which `callbot capacity`
measures on this machine with synthetic callers) and, with `capacity.learn`, corrected from
the turns this node answers: the server-side reply latency (caller's end of speech -> the
bot's first audio) of every turn, with the number of calls live when it was answered.

- Over budget: when the p95 of the last `window_s` seconds (at least `min_turns` turns) is
  above the budget, and not because of one turn alone (below 20 turns the p95 is the
  slowest one, and a single hiccup is no reason to refuse callers), the capacity becomes one
  less than the calls that were live during the slow turns (at least 1): that many calls was
  one too many.
- Recovered: a full window at capacity with p95 within 80 % of the budget raises it by one,
  up to the configured ceiling (a margin, so it does not flap at the edge).

`CallRegistry.reserve` asks `capacity()` for every new call (every entrance comes through
`admission.admit`); the refusal is 503 `at_capacity` with `Retry-After`, and a cluster node
hands the offer on instead, as at its call limit. `/healthz` and `/metrics` report it.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

from callbot.signalling.config import CapacitySettings

RECOVER_FRACTION = 0.8  # p95 within this share of the budget at capacity: one more call


class CapacityModel:
    def __init__(self, settings: CapacitySettings, max_calls: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.max_calls = max_calls
        # The configured ceiling: the measured capacity, never above the hard call limit.
        self.ceiling = min(max_calls, settings.calls) if settings.calls > 0 else max_calls
        self.learned: int | None = None  # None: nothing learned (the ceiling applies)
        self._clock = clock
        # (when, reply ms, calls live) of recent turns
        self._turns: collections.deque[tuple[float, float, int]] = collections.deque(maxlen=512)
        self._since = clock()  # start of the current observation window

    @property
    def measured(self) -> bool:
        """A capacity below the hard call limit is known (configured or learned)."""
        return self.settings.calls > 0 or self.learned is not None

    @property
    def capacity(self) -> int:
        return self.ceiling if self.learned is None else min(self.ceiling, self.learned)

    def headroom(self, load: int) -> int:
        return max(0, self.capacity - load)

    def reply_p95_ms(self) -> float | None:
        values = [ms for _, ms, _ in self._recent()]
        return _p95(values) if values else None

    def observe(self, reply_ms: float, calls: int) -> None:
        """A turn was answered `reply_ms` after the caller stopped, with `calls` calls live."""
        now = self._clock()
        self._turns.append((now, reply_ms, max(1, calls)))
        if not self.settings.learn:
            return
        recent = self._recent()
        if len(recent) < self.settings.min_turns:
            return
        budget = self.settings.latency_budget_ms
        p95 = _p95([ms for _, ms, _ in recent])
        slow = [load for _, ms, load in recent if ms > budget]
        if p95 > budget and len(slow) >= 2:
            slow_load = min(slow)
            lowered = max(1, min(self.capacity, slow_load) - 1)
            if lowered < self.capacity or self.learned is None:
                self.learned = lowered
                self._restart(now)  # judge the new capacity on turns answered under it
        elif (self.learned is not None and self.learned < self.ceiling
              and now - self._since >= self.settings.window_s
              and p95 <= RECOVER_FRACTION * budget
              and max(load for _, _, load in recent) >= self.learned):
            self.learned += 1
            self._restart(now)

    def _recent(self) -> list[tuple[float, float, int]]:
        since = max(self._since, self._clock() - self.settings.window_s)
        return [t for t in self._turns if t[0] >= since]

    def _restart(self, now: float) -> None:
        self._since = now
        self._turns.clear()


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
