"""/metrics counters move during a call, not only when it ends, and never go back."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from callbot.signalling.config import Limits
from callbot.signalling.server.metrics import CallCounts, CallMetrics
from tests.conftest import TEST_CONFIG, ServerFactory
from tests.test_text_only_call import TextCaller


def _value(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def _metrics(base: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        return await resp.text()


def test_a_call_s_counts_move_from_live_to_ended_without_going_back() -> None:
    live = [CallCounts(100, 2, 1, 0)]
    metrics = CallMetrics(lambda: len(live), lambda: live)

    def sent() -> float:
        return _value(metrics.render()[0].decode(), "callbot_frames_sent_total")

    assert sent() == 100
    live[0] = CallCounts(250, 3, 1, 1)
    assert sent() == 250  # moved during the call
    ended = live.pop()
    metrics.call_ended("hangup", ended)
    assert sent() == 250  # the same total once ended
    text = metrics.render()[0].decode()
    assert _value(text, "callbot_onset_pauses_resumed_total") == 1
    assert 'callbot_calls_ended_total{reason="hangup"} 1.0' in text


async def test_frames_sent_moves_during_a_real_call(start_server: ServerFactory) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=Limits(
        max_calls_per_client=100, call_rate_per_minute=10_000)))
    caller = TextCaller(base)
    try:
        await caller.connect()
        await asyncio.sleep(0.5)
        first = _value(await _metrics(base), "callbot_frames_sent_total")
        await asyncio.sleep(2.0)
        during = _value(await _metrics(base), "callbot_frames_sent_total")
        # The bot's track sends a 20 ms frame (silence when it has nothing to say): ~100 in
        # 2 s; a loaded machine may send fewer, never none.
        assert during - first > 30, (first, during)
    finally:
        await caller.close()
    for _ in range(100):
        if _value(await _metrics(base), "callbot_active_calls") == 0:
            break
        await asyncio.sleep(0.1)
    after = _value(await _metrics(base), "callbot_frames_sent_total")
    assert after >= during
