"""Load shedding: while turns wait for a model or the event loop runs late, a new call gets
503 `overloaded` (with Retry-After) and the calls in progress go on; never the first call."""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import pytest

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.worker import PRIORITY_URGENT, ModelWorker
from callbot.signalling.calls.registry import CallLimitReached, CallRegistry, Overloaded
from callbot.signalling.config import CallbotConfig, Limits
from callbot.signalling.server.overload import OverloadMonitor
from tests.conftest import LOOPBACK, ServerFactory

pytestmark = pytest.mark.overload  # conftest leaves load shedding on only for these tests


async def test_a_turn_waiting_for_a_model_is_overload() -> None:
    worker = ModelWorker("test-busy")
    release = threading.Event()
    try:
        busy = worker.submit(release.wait, 5)  # another call's job holds the model
        waiting = worker.submit(lambda: None, priority=PRIORITY_URGENT)
        await asyncio.sleep(0.3)
        release.set()
        await busy
        await waiting
        assert worker.urgent_wait_s(5.0) >= 0.25
        monitor = OverloadMonitor(max_queue_ms=200, max_loop_lag_ms=10_000,
                                  workers=lambda: [worker])
        reason = monitor.reason()
        assert reason is not None and "test-busy" in reason, reason
        relaxed = OverloadMonitor(max_queue_ms=1000, max_loop_lag_ms=10_000,
                                  workers=lambda: [worker])
        assert relaxed.reason() is None
        # The window moves on: an old wait is no overload.
        await asyncio.sleep(0.1)
        assert OverloadMonitor(200, 10_000, window_s=0.05, workers=lambda: [worker]
                               ).reason() is None
    finally:
        worker.close()


async def test_a_late_event_loop_is_overload() -> None:
    monitor = OverloadMonitor(max_queue_ms=10_000, max_loop_lag_ms=150, workers=list)
    monitor.start()
    try:
        await asyncio.sleep(0.15)
        assert monitor.reason() is None
        time.sleep(0.4)  # noqa: ASYNC251 - blocking the loop on purpose: that is the overload
        await asyncio.sleep(0.25)
        reason = monitor.reason()
        assert reason is not None and "event loop" in reason, reason
    finally:
        await monitor.stop()


def test_registry_never_refuses_the_first_call_for_load() -> None:
    registry = CallRegistry(4, overloaded=lambda: "turns waited 2000 ms")
    registry.reserve()  # an idle server: its own load cannot be the problem
    with pytest.raises(Overloaded) as info:
        registry.reserve()
    error = info.value.refusal()
    assert (error.status, error.code) == (503, "overloaded")
    assert error.headers == {"Retry-After": "2"}
    assert "2000 ms" in error.message
    assert isinstance(info.value, CallLimitReached)  # a cluster node hands the offer on
    assert registry.load == 1


async def test_overloaded_server_refuses_new_calls_and_keeps_the_current_one(
    start_server: ServerFactory,
) -> None:
    # Tight thresholds so that this machine's ordinary load counts: one call, whose first turn
    # waits for the models, then a second call is refused.
    config = CallbotConfig(ice_hosts=(LOOPBACK,), limits=Limits(
        overload_queue_ms=0.001, overload_loop_lag_ms=10_000, call_rate_per_minute=1000))
    url = await start_server(config)
    caller = SyntheticCaller(url)
    try:
        await caller.connect()
        caller.send({"type": "input.text", "text": "Say hello."})
        await caller.wait_event("response.audio.started", 30)
        second = SyntheticCaller(url)
        try:
            with pytest.raises(Exception, match="503.*overloaded"):
                await second.connect()
        finally:
            await second.pc.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as resp:
                assert 'callbot_call_rejections_total{reason="overloaded"}' in await resp.text()
        # The call in progress is untouched: it answers the next turn.
        index = len(caller.events)
        caller.send({"type": "input.text", "text": "And goodbye."})
        await caller.wait_event("response.audio.done", 30, after=index)
    finally:
        await caller.hangup()
