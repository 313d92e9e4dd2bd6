"""Slow clients (issue 15): headers that never finish and bodies that trickle time out, and
the connections waiting for their headers are bounded. An aborted POST leaves nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from callbot.signalling.app import create_app
from callbot.signalling.config import Limits
from callbot.signalling.server.slowclients import GuardedTCPSite
from tests.conftest import LOOPBACK, TEST_CONFIG

LIMITS = Limits(max_calls_per_client=100, call_rate_per_minute=10_000, header_timeout_s=1,
                body_timeout_s=1, max_pending_connections=5)


@pytest.fixture
async def guarded(engines) -> AsyncIterator[tuple[str, GuardedTCPSite]]:
    runner = web.AppRunner(create_app(TEST_CONFIG.replace(limits=LIMITS), engines=engines))
    await runner.setup()
    site = GuardedTCPSite(runner, LOOPBACK, 0, limits=LIMITS)
    await site.start()
    yield f"http://{LOOPBACK}:{site.port}", site
    await runner.cleanup()


async def _open(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    return await asyncio.wait_for(reader.read(), seconds)


async def test_unfinished_headers_time_out(guarded) -> None:
    base, site = guarded
    reader, writer = await _open(base)
    writer.write(b"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
    started = time.monotonic()
    assert await _closed_within(reader, 5) == b""
    assert 0.8 < time.monotonic() - started < 3
    assert site.pending.timed_out == 1 and site.pending.count == 0
    writer.close()


async def test_a_trickled_body_is_a_408(guarded) -> None:
    base, _ = guarded
    reader, writer = await _open(base)
    writer.write(b"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 1000\r\n\r\n{")
    for _ in range(6):
        await asyncio.sleep(0.3)
        if reader.at_eof():
            break
        writer.write(b" ")
    try:
        response = await _closed_within(reader, 5)
    except TimeoutError:
        response = reader._buffer  # type: ignore[attr-defined]
    assert response.startswith(b"HTTP/1.1 408"), response[:80]
    assert b"body_timeout" in response
    writer.close()


async def test_pending_connections_are_bounded(guarded) -> None:
    base, site = guarded
    conns = [await _open(base) for _ in range(20)]
    for _, writer in conns:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
    await asyncio.sleep(0.3)
    assert site.pending.count == 5
    assert site.pending.refused == 15
    closed_early = 0
    for reader, _ in conns:
        try:
            if await asyncio.wait_for(reader.read(), 0.05) == b"":
                closed_early += 1
        except ConnectionResetError:
            closed_early += 1
        except TimeoutError:
            pass
    assert closed_early == 15
    await asyncio.sleep(1.2)  # the 5 held ones time out
    assert site.pending.count == 0
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
        assert resp.status == 200  # a real client still gets in once those time out
        assert (await resp.json())["calls"] == 0
    for _, writer in conns:
        writer.close()


async def test_an_aborted_post_leaves_nothing(guarded) -> None:
    base, site = guarded
    reader, writer = await _open(base)
    writer.write(b"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 5000\r\n\r\n{\"type\": \"offer\"")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()
    await asyncio.sleep(1.5)
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
        assert (await resp.json())["calls"] == 0
    assert site.pending.count == 0
