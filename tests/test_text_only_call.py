"""Text-only calls: a caller without a microphone (receive-only audio and the data channel)
lives as long as it types, and is still idle when it neither speaks nor types.

The caller is a real aiortc peer. It sends no RTP (no microphone track), and its RTCP is
silenced: aiortc's receiver reports every 0.5-1.5 s, Chromium's audio receiver only every
2.5-7.5 s, so a browser without a microphone can be quiet longer than the liveness grace. A
real browser with no RTCP at all in a window must still be seen alive (the server asks it:
an SCTP heartbeat, which its stack acks).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from callbot.rtc.ice import rtc_configuration
from callbot.signalling.config import Limits
from tests.conftest import TEST_CONFIG, ServerFactory

pytestmark = pytest.mark.e2e

GRACE_S = 3.0  # the liveness window: no packet this long from a live call ends it


def _silence_rtcp(receiver: RTCRtpReceiver) -> None:
    """This receiver sends no RTCP (before negotiation: aiortc starts it on the answer)."""

    async def quiet() -> None:
        receiver._RTCRtpReceiver__rtcp_started.set()  # type: ignore[attr-defined]
        try:
            await asyncio.Event().wait()
        finally:
            receiver._RTCRtpReceiver__rtcp_exited.set()  # type: ignore[attr-defined]

    receiver._run_rtcp = quiet  # type: ignore[method-assign]


class TextCaller:
    """No microphone: a receive-only audio transceiver and the events data channel."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.pc = RTCPeerConnection(rtc_configuration(()))
        transceiver = self.pc.addTransceiver("audio", direction="recvonly")
        _silence_rtcp(transceiver.receiver)
        self.channel = self.pc.createDataChannel("events")
        self.events: list[dict[str, Any]] = []
        self.new_event = asyncio.Event()
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.call_id = ""
        self._drains: list[asyncio.Task[None]] = []

    def _on_message(self, message: str | bytes) -> None:
        self.events.append(json.loads(message))
        self.new_event.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def drain() -> None:  # the bot's voice is heard (and dropped)
            try:
                while True:
                    await track.recv()
            except MediaStreamError:
                pass

        self._drains.append(asyncio.ensure_future(drain()))

    async def connect(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"type": "offer", "sdp": self.pc.localDescription.sdp}
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.base}/v1/calls", json=body) as resp:
            answer = await resp.json()
            assert resp.status == 201, answer
        self.call_id = answer["call_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        deadline = time.monotonic() + 20
        while self.pc.connectionState != "connected" or self.channel.readyState != "open":
            assert time.monotonic() < deadline, "the call did not connect"
            await asyncio.sleep(0.05)

    async def ask(self, text: str, timeout: float = 90) -> str:
        """Type a question; the bot's whole written answer (when its audio is done)."""
        start = len(self.events)
        self.channel.send(json.dumps({"type": "input.text", "text": text}))
        deadline = time.monotonic() + timeout
        while True:
            new = self.events[start:]
            assert not any(e["type"] == "error" for e in new), new
            if any(e["type"] == "response.audio.done" for e in new):
                return "".join(e["delta"] for e in new if e["type"] == "response.text.delta")
            left = deadline - time.monotonic()
            assert left > 0, f"no answer to {text!r}"
            self.new_event.clear()
            try:
                await asyncio.wait_for(self.new_event.wait(), timeout=left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        for task in self._drains:
            task.cancel()
        await self.pc.close()


async def _calls(base: str) -> list[str]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/calls") as resp:
        return [c["call_id"] for c in (await resp.json())["calls"]]


async def _ended(base: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return "\n".join(line for line in text.splitlines()
                     if line.startswith("callbot_calls_ended_total{"))


@pytest.fixture
async def callers() -> AsyncIterator[list[TextCaller]]:
    made: list[TextCaller] = []
    yield made
    for caller in made:
        await caller.close()


async def test_a_caller_without_a_microphone_talks_as_long_as_it_types(
        start_server: ServerFactory, callers: list[TextCaller]) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=Limits(
        max_calls_per_client=100, call_rate_per_minute=10_000,
        disconnect_grace_s=GRACE_S, idle_timeout_s=60)))
    caller = TextCaller(base)
    callers.append(caller)
    await caller.connect()
    started = time.monotonic()
    answers = []
    for question in ("Hello, who are you?", "What is the capital of France?",
                     "How many legs does a spider have?"):
        # Quiet for over twice the liveness window between questions: no RTP, no RTCP,
        # nothing typed. A live caller stays in the call.
        await asyncio.sleep(2.5 * GRACE_S)
        assert caller.call_id in await _calls(base), await _ended(base)
        answers.append(await caller.ask(question))
    took = time.monotonic() - started
    print(f"\nthree typed answers over {took:.0f} s, grace {GRACE_S} s: {answers}")
    assert all(answer.strip() for answer in answers), answers
    assert caller.call_id in await _calls(base)
    assert "disconnected" not in await _ended(base)


async def test_a_caller_who_neither_speaks_nor_types_is_idle(
        start_server: ServerFactory, callers: list[TextCaller]) -> None:
    base = await start_server(TEST_CONFIG.replace(limits=Limits(
        max_calls_per_client=100, call_rate_per_minute=10_000,
        disconnect_grace_s=2.0, idle_timeout_s=6.0)))
    caller = TextCaller(base)
    callers.append(caller)
    await caller.connect()
    started = time.monotonic()
    while caller.call_id in await _calls(base):
        assert time.monotonic() - started < 15, "the idle call was not ended"
        await asyncio.sleep(0.2)
    took = time.monotonic() - started
    assert took > 5.0, took  # not dropped as disconnected after the 2 s grace
    assert 'reason="idle_timeout"} 1.0' in await _ended(base)
    assert "disconnected" not in await _ended(base)
    assert any(e["type"] == "idle.warning" for e in caller.events)


async def test_a_peer_that_vanishes_is_still_dropped(
        start_server: ServerFactory, callers: list[TextCaller]) -> None:
    """The heartbeat must not keep a gone peer alive: it cannot ack."""
    base = await start_server(TEST_CONFIG.replace(limits=Limits(
        max_calls_per_client=100, call_rate_per_minute=10_000,
        disconnect_grace_s=2.0, idle_timeout_s=30)))
    caller = TextCaller(base)
    callers.append(caller)
    await caller.connect()
    ice = caller.pc.getTransceivers()[0].receiver.transport.transport
    for protocol in ice._connection._protocols:  # its sockets close; nothing is answered
        protocol.transport.close()
    started = time.monotonic()
    while caller.call_id in await _calls(base):
        assert time.monotonic() - started < 10, "the vanished peer was not dropped"
        await asyncio.sleep(0.1)
    assert time.monotonic() - started < 4.5
    assert 'reason="disconnected"} 1.0' in await _ended(base)
