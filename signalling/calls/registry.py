"""The calls alive in this process, with the concurrency cap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from callbot.signalling.calls.call import Call
from callbot.signalling.errors import ApiError


class CallLimitReached(Exception):
    """No slot for a new call: the call limit (or, as `Overloaded`, the machine's load)."""

    code = "too_many_calls"
    metric = "capacity"  # the reason label of callbot_call_rejections_total

    def refusal(self) -> ApiError:
        return ApiError(503, self.code, str(self) or "the server is at its call limit; try "
                        "again later", headers={"Retry-After": "2"})


class Overloaded(CallLimitReached):
    code = "overloaded"
    metric = "overloaded"

    def refusal(self) -> ApiError:
        return ApiError(503, self.code, f"the server is busy ({self}); try again shortly",
                        headers={"Retry-After": "2"})


class AtCapacity(CallLimitReached):
    """The node holds as many talking calls as it can answer within the latency budget."""

    code = "at_capacity"
    metric = "at_capacity"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def refusal(self) -> ApiError:
        return ApiError(503, self.code, str(self),
                        headers={"Retry-After": str(self.retry_after_s)})


class CallRegistry:
    def __init__(self, max_calls: int,
                 overloaded: Callable[[], str | None] | None = None,
                 capacity: Callable[[], int] | None = None, *,
                 retry_after_s: int = 5) -> None:
        self.max_calls = max_calls
        self._overloaded = overloaded  # why a new call would slow the others, or None
        # The talking calls this node answers within its latency budget (server/capacity.py)
        self._capacity = capacity
        self._retry_after_s = retry_after_s
        self._calls: dict[str, Call] = {}
        self._reserved = 0  # calls being negotiated, counted against the cap
        self.total_started = 0

    def reserve(self) -> None:
        """Claim a slot before negotiating, so concurrent offers cannot overshoot the cap."""
        if len(self._calls) + self._reserved >= self.max_calls:
            raise CallLimitReached(
                f"the server is at its limit of {self.max_calls} calls; try again later")
        capacity = self.capacity
        if self.load >= capacity:
            raise AtCapacity(
                f"the server holds {capacity} talking calls within its latency budget and "
                f"has {self.load}; one more would slow every answer: try again in "
                f"{self._retry_after_s} s", self._retry_after_s)
        if self._overloaded is not None and self.load > 0:
            reason = self._overloaded()
            if reason is not None:
                raise Overloaded(reason)
        self._reserved += 1

    @property
    def capacity(self) -> int:
        """Calls this node takes now: the measured capacity, never above `max_calls`."""
        if self._capacity is None:
            return self.max_calls
        return min(self.max_calls, self._capacity())

    @property
    def load(self) -> int:
        """Live calls plus calls being negotiated."""
        return len(self._calls) + self._reserved

    @property
    def full(self) -> bool:
        return self.load >= self.capacity

    def release_reservation(self) -> None:
        self._reserved -= 1

    def add(self, call: Call) -> None:
        self._reserved -= 1
        self._calls[call.id] = call
        self.total_started += 1

    def discard(self, call: Call) -> None:
        self._calls.pop(call.id, None)

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def __len__(self) -> int:
        return len(self._calls)

    def all(self) -> list[Call]:
        return list(self._calls.values())

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(c.close(reason) for c in self.all()), return_exceptions=True)
