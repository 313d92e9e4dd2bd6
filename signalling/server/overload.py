"""Load shedding: refuse a new call before the calls in progress get slower.

On a small machine the model threads and the event loop are shared by every call. When a
turn already waits for a model (another call's transcription is ahead of it) or the event
loop runs late (media for every call is handled there), one more call makes every reply
later. So a new call gets 503 `overloaded` with `Retry-After` while, in the last
`window_s` seconds:

- a turn waited longer than `limits.overload_queue_ms` for any model (ASR, LLM, TTS, turn
  model...), or
- the event loop ran more than `limits.overload_loop_lag_ms` late.

A server with no call never refuses (a lone slow turn is not overload). In a cluster, a node
that refuses hands the offer to another node, as it does at its call limit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence

from callbot.pipeline.worker import ModelWorker, live_workers

SAMPLE_S = 0.1
WINDOW_S = 5.0


class OverloadMonitor:
    def __init__(self, max_queue_ms: float, max_loop_lag_ms: float, *,
                 window_s: float = WINDOW_S,
                 workers: Callable[[], Sequence[ModelWorker]] = live_workers) -> None:
        self.max_queue_ms = max_queue_ms
        self.max_loop_lag_ms = max_loop_lag_ms
        self.window_s = window_s
        self._workers = workers
        self._lags: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=int(window_s / SAMPLE_S) + 1)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sample_loop_lag(), name="overload-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sample_loop_lag(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(SAMPLE_S)
            now = time.monotonic()
            self._lags.append((now, max(0.0, now - before - SAMPLE_S)))

    def loop_lag_ms(self) -> float:
        since = time.monotonic() - self.window_s
        return 1000 * max((lag for at, lag in list(self._lags) if at >= since), default=0.0)

    def reason(self) -> str | None:
        """Why a new call would slow the others now, or None."""
        lag = self.loop_lag_ms()
        if lag > self.max_loop_lag_ms:
            return f"the event loop ran {lag:.0f} ms late in the last {self.window_s:g} s"
        for worker in self._workers():
            waited = worker.urgent_wait_s(self.window_s) * 1000
            if waited > self.max_queue_ms:
                return (f"turns waited up to {waited:.0f} ms for the {worker.name} model in "
                        f"the last {self.window_s:g} s")
        return None
