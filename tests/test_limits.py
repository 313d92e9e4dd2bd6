"""Per-client limits (concurrency, set-up rate), call duration, event size, shutdown drain."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from callbot.loadtest.caller import CallFailed, SyntheticCaller
from callbot.signalling.app import create_app
from callbot.signalling.calls.hooks import CallHooks
from callbot.signalling.config import Limits
from callbot.signalling.ratelimit import ClientLimiter, RateLimited
from tests.conftest import LOOPBACK, TEST_CONFIG

BAD_OFFER = {"type": "offer", "sdp": "v=0 but nothing else"}


def _limits(**changes) -> Limits:
    return Limits(**changes)


async def _post(base: str, body=BAD_OFFER):
    async with aiohttp.ClientSession() as http, http.post(f"{base}/v1/calls", json=body) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.1)


async def _n_calls(base: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
        return (await resp.json())["calls"]


# ---- the limiter itself -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = ClientLimiter(max_concurrent=100, rate_per_minute=3, clock=clock)
    for _ in range(3):
        limiter.admit("a")
    with pytest.raises(RateLimited) as info:
        limiter.admit("a")
    assert info.value.retry_after == 20  # one token per 20 s
    limiter.admit("b")  # other clients are not affected
    clock.now += 20
    limiter.admit("a")
    with pytest.raises(RateLimited):
        limiter.admit("a")


def test_concurrency_is_per_client_and_released() -> None:
    limiter = ClientLimiter(max_concurrent=2, rate_per_minute=1000, clock=Clock())
    limiter.admit("a")
    limiter.admit("a")
    with pytest.raises(RateLimited, match="concurrent"):
        limiter.admit("a")
    assert limiter.active("a") == 2
    limiter.release("a")
    limiter.admit("a")
    limiter.release("a")
    limiter.release("a")
    assert limiter.active("a") == 0


def test_a_refused_call_takes_no_token() -> None:
    limiter = ClientLimiter(max_concurrent=1, rate_per_minute=2, clock=Clock())
    limiter.admit("a")
    for _ in range(5):
        with pytest.raises(RateLimited, match="concurrent"):
            limiter.admit("a")
    limiter.release("a")
    limiter.admit("a")  # the second token is still there


def test_idle_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = ClientLimiter(max_concurrent=5, rate_per_minute=60, clock=clock)
    limiter.MAX_BUCKETS = 10
    for i in range(10):
        limiter.admit(f"c{i}")
        limiter.release(f"c{i}")
    clock.now += 61
    limiter.admit("new")
    assert len(limiter._buckets) == 1


# ---- over HTTP ------------------------------------------------------------------------------


async def test_call_rate_is_limited_with_retry_after(start_server) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=_limits(call_rate_per_minute=2)))
    assert (await _post(base))[0] == 400
    assert (await _post(base))[0] == 400
    status, headers, body = await _post(base)
    assert status == 429
    assert body["error"]["code"] == "rate_limited"
    assert 25 <= int(headers["Retry-After"]) <= 30
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        assert 'callbot_call_rejections_total{reason="rate_limited"} 1.0' in await resp.text()


async def test_concurrent_calls_per_client(start_server) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=_limits(max_calls_per_client=1)))
    first = SyntheticCaller(base)
    try:
        await first.connect()
        status, headers, body = await _post(base)
        assert (status, body["error"]["code"]) == (429, "rate_limited")
        assert "Retry-After" in headers
        second = SyntheticCaller(base)
        with pytest.raises(CallFailed, match="429"):
            await second.connect()
        await second.hangup(delete=False)
    finally:
        await first.hangup()
    await _wait_for(lambda: _n_calls_is(base, 0))
    assert (await _post(base))[0] == 400  # the slot is free again


async def _n_calls_is(base: str, n: int) -> bool:
    return await _n_calls(base) == n


async def test_failed_negotiation_frees_the_client_slot(start_server) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=_limits(max_calls_per_client=1)))
    for _ in range(3):
        assert (await _post(base))[0] == 400


async def test_max_call_duration_ends_the_call(start_server) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=_limits(max_call_s=1.5)))
    caller = SyntheticCaller(base, keep_audio=False)
    try:
        await caller.connect()
        started = time.monotonic()
        event = await caller.wait_event("error", timeout=10)
        assert event["code"] == "max_duration"
        assert 0.5 <= time.monotonic() - started <= 4
        await _wait_for(lambda: _n_calls_is(base, 0))
    finally:
        await caller.hangup(delete=False)


async def test_oversized_event_message_is_an_error_event(start_server) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=_limits(max_event_bytes=512)))
    caller = SyntheticCaller(base, keep_audio=False)
    try:
        await caller.connect()
        caller.send({"type": "input.text", "text": "x" * 600})
        event = await caller.wait_event("error", timeout=10)
        assert event["code"] == "bad_message"
        assert "512" in event["message"]
        assert await _n_calls(base) == 1  # the call goes on
    finally:
        await caller.hangup()


async def test_shutdown_drains_then_closes_calls(engines) -> None:
    ended: list[str] = []
    config = TEST_CONFIG.replace(limits=_limits(drain_s=1.0))
    app = create_app(config, engines=engines,
                     hooks=CallHooks(on_call_ended=lambda info, reason: ended.append(reason)))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    caller = SyntheticCaller(f"http://{LOOPBACK}:{port}", keep_audio=False)
    try:
        await caller.connect()
        started = time.monotonic()
        await runner.cleanup()
        took = time.monotonic() - started
    finally:
        await caller.hangup(delete=False)
    assert 0.9 <= took < 8, took
    assert ended == ["server_shutdown"]
