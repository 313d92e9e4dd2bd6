"""One call can't hurt another, or itself (issue 15): per-call data-channel limits with
`error` events, a bounded send buffer for a peer that stops reading, silence is idle."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiortc.rtcsctptransport import DataChunk

from callbot.loadtest.caller import SyntheticCaller
from callbot.signalling.app import create_app
from callbot.signalling.config import Limits
from callbot.signalling.server.state import STATE
from tests.conftest import TEST_CONFIG


async def test_a_flooding_call_is_limited_and_its_neighbour_is_not(server: str) -> None:
    flood, neighbour = SyntheticCaller(server), SyntheticCaller(server)
    try:
        await flood.connect()
        await neighbour.connect()
        for _ in range(500):
            flood.send({"type": "no.such"})
        for _ in range(50):
            flood.send({"type": "input.text", "text": "Hi"})
        await asyncio.sleep(2)
        errors = flood.events_of("error")
        codes = [e["code"] for e in errors]
        assert "rate_limited" in codes
        # Bounded: the burst's worth of replies, then about one rate_limited error a second.
        assert len(errors) < 60, len(errors)
        assert codes.count("rate_limited") <= 4
        assert len(flood.events_of("transcript.final")) <= Limits().typed_turn_burst
        # The neighbour's messages are answered at once.
        sent = time.monotonic()
        neighbour.send({"type": "no.such"})
        await neighbour.wait_event("error", timeout=5)
        assert time.monotonic() - sent < 1.0
        assert [e["code"] for e in neighbour.events_of("error")] == ["unknown_type"]
    finally:
        await flood.hangup()
        await neighbour.hangup()


async def test_a_peer_that_stops_reading_is_bounded_then_ended(start_server, engines) -> None:
    bound = 16 * 1024
    app = create_app(TEST_CONFIG.replace(limits=Limits(
        max_calls_per_client=100, call_rate_per_minute=10_000, channel_messages_per_s=10_000,
        channel_burst=10_000, max_send_buffer_bytes=bound, send_stall_s=2)), engines=engines)
    base = await start_server(app=app)
    caller = SyntheticCaller(base)
    try:
        call_id = await caller.connect()
        sctp = caller.pc.sctp.transport  # the caller's SCTP stops taking data: no SACKs
        sctp_transport = caller.pc.sctp
        original = sctp_transport._receive_chunk

        async def drop_data(chunk):  # noqa: ANN001, ANN202
            if not isinstance(chunk, DataChunk):
                await original(chunk)

        sctp_transport._receive_chunk = drop_data
        assert sctp is not None
        call = app[STATE].registry.get(call_id)
        assert call is not None
        peak = 0
        for _ in range(60):
            for _ in range(50):  # each answered with an error event the peer never reads
                caller.send({"type": "no.such", "pad": "x" * 200})
            await asyncio.sleep(0.05)
            channel = call.transport._channel  # type: ignore[attr-defined]
            assert channel is not None
            peak = max(peak, channel.bufferedAmount)
            if call.closed.is_set():
                break
        assert peak <= bound, peak
        assert call.transport.events_dropped > 0  # type: ignore[attr-defined]
        await asyncio.wait_for(call.closed.wait(), 10)
        assert call.close_reason == "send_buffer_full"
    finally:
        await caller.hangup(delete=False)


async def test_a_caller_sending_only_silence_is_idle(start_server) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=Limits(
        max_calls_per_client=100, call_rate_per_minute=10_000, idle_timeout_s=2)))
    caller = SyntheticCaller(base)  # connected, its microphone sends silent frames
    try:
        call_id = await caller.connect()
        started = time.monotonic()
        while True:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/calls") as resp:
                ids = [c["call_id"] for c in (await resp.json())["calls"]]
            if call_id not in ids:
                break
            assert time.monotonic() - started < 8, "a silent caller was never idle"
            await asyncio.sleep(0.2)
        assert caller.events_of("idle.warning"), "no warning before the idle hang-up"
    finally:
        await caller.hangup(delete=False)
