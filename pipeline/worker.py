"""One thread per model, with priorities.

Model objects (a Whisper model, a llama.cpp context, a Piper voice) are shared by every call
in the process, and most are not safe to use from two threads at once. Each gets a
`ModelWorker`: one thread that runs jobs in priority order (a turn's final transcript before a
partial), and drops a job whose caller stopped waiting before it started. The models release
the GIL while they compute, so the event loop keeps running.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

PRIORITY_URGENT = 0  # someone is waiting on this to answer a turn
PRIORITY_BACKGROUND = 10  # partial transcripts: nice to have, skippable

_LIVE: weakref.WeakSet[ModelWorker] = weakref.WeakSet()


def live_workers() -> list[ModelWorker]:
    """Every model worker of this process (the server's overload check reads their waits)."""
    return [w for w in list(_LIVE) if not w.closed]


class ModelWorker:
    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name=f"model-{name}", daemon=True)
        self._busy = False
        self._closed = False
        # (started, waited) of recent urgent jobs: how long a turn waited for this model
        self._waits: collections.deque[tuple[float, float]] = collections.deque(maxlen=256)
        self._thread.start()
        _LIVE.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def urgent_wait_s(self, window_s: float) -> float:
        """The longest an urgent job waited in the queue, among those started in the last
        `window_s` seconds (0 when none waited)."""
        since = time.monotonic() - window_s
        return max((waited for started, waited in list(self._waits) if started >= since),
                   default=0.0)

    @property
    def idle(self) -> bool:
        return not self._busy and self._jobs.empty()

    @property
    def backlog(self) -> int:
        return self._jobs.qsize() + (1 if self._busy else 0)

    def submit(
        self, fn: Callable[..., T], *args: Any, priority: int = PRIORITY_URGENT
    ) -> asyncio.Future[T]:
        """Run `fn(*args)` on the worker thread; await the returned future for its result."""
        if self._closed:
            raise RuntimeError(f"model worker {self.name} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()  # the job logs with its call's id
        self._jobs.put((priority, next(self._order),
                        (loop, future, context, fn, args, time.monotonic())))
        return future

    def close(self) -> None:
        self._closed = True
        self._jobs.put((-1, -1, None))

    def _run(self) -> None:
        while True:
            priority, _, job = self._jobs.get()
            if job is None:
                return
            loop, future, context, fn, args, submitted = job
            if future.cancelled():
                continue  # the caller gave up (barge-in, hang-up): skip the work entirely
            if priority <= PRIORITY_URGENT:
                now = time.monotonic()
                self._waits.append((now, now - submitted))
            self._busy = True
            try:
                result = context.run(fn, *args)
                outcome: tuple[Callable[..., None], Any] = (_set_result, result)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                outcome = (_set_exception, exc)
            finally:
                self._busy = False
            try:
                loop.call_soon_threadsafe(outcome[0], future, outcome[1])
            except RuntimeError:
                pass  # that event loop has closed; nobody is waiting any more


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
