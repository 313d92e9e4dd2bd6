"""Real calls while a model stage fails, hangs, or the caller sends garbage: the caller gets an
`error` event, the call stays usable, other calls on the server are untouched, and nothing is
left behind after hang-up."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.engines import Engines
from callbot.pipeline.llm.base import LLMError
from callbot.pipeline.settings import ReplySettings, TurnSettings
from callbot.signalling.config import Limits
from support import speech
from tests.conftest import TEST_CONFIG, ServerFactory

pytestmark = pytest.mark.e2e

FAIL_WORD = "explode"  # the LLM raises LLMError
CRASH_WORD = "kaboom"  # the LLM raises a plain bug
HANG_WORD = "freeze"  # the LLM never answers
LLM_TIMEOUT_S = 8.0  # whole reply (LLM + speech); the hanging-LLM test waits this long
HEALTHY = "What is two plus two? Answer in one short sentence."
FAULT_CONFIG = TEST_CONFIG.replace(
    limits=Limits(call_rate_per_minute=100_000),
    turn=TurnSettings(reply=ReplySettings(timeout_s=LLM_TIMEOUT_S)),
)


class FaultyLLM:
    """The real model, except for turns that contain a trigger word."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = f"faulty-{inner.name}"
        self.supports_tools = inner.supports_tools

    def warm_up(self, system_prompt: str) -> None:
        pass

    async def close(self) -> None:
        pass

    def stream_chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        text = str(messages[-1]["content"]).lower()
        if FAIL_WORD in text:
            return self._raise(LLMError("the model server went away"))
        if CRASH_WORD in text:
            return self._raise(RuntimeError("a bug in the model wrapper"))
        if HANG_WORD in text:
            return self._hang()
        return self.inner.stream_chat(messages, **kwargs)

    async def _raise(self, exc: Exception) -> AsyncIterator[str]:
        await asyncio.sleep(0)
        raise exc
        yield ""  # pragma: no cover

    async def _hang(self) -> AsyncIterator[str]:
        await asyncio.sleep(3600)
        yield ""  # pragma: no cover


class FailingASR:
    """Final transcriptions raise; partial previews raise too (they are only logged)."""

    name = "failing-asr"
    languages = None
    busy = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def transcribe(self, pcm: np.ndarray, **kwargs: Any) -> Any:
        self.calls += 1
        raise RuntimeError("the recognizer crashed")


@pytest.fixture(scope="module")
async def faulty_server(start_server: ServerFactory, engines: Engines) -> str:
    faulty = Engines(asr=engines.asr, llm=FaultyLLM(engines.llm), tts=engines.tts)
    return await start_server(FAULT_CONFIG, app_engines=faulty)


@pytest.fixture(scope="module")
async def deaf_server(start_server: ServerFactory, engines: Engines) -> str:
    deaf = Engines(asr=FailingASR(engines.asr), llm=engines.llm, tts=engines.tts)  # type: ignore[arg-type]
    return await start_server(FAULT_CONFIG, app_engines=deaf)


@pytest.fixture
async def callers() -> AsyncIterator[list[SyntheticCaller]]:
    made: list[SyntheticCaller] = []
    yield made
    await asyncio.gather(*(c.hangup() for c in made), return_exceptions=True)


async def connect(base: str, made: list[SyntheticCaller]) -> SyntheticCaller:
    caller = SyntheticCaller(base, keep_audio=False)
    made.append(caller)
    await caller.connect()
    return caller


async def typed_turn_works(caller: SyntheticCaller, text: str = HEALTHY,
                           timeout: float = 60) -> dict[str, Any]:
    """A healthy typed turn: the bot starts speaking, finishes, and reports metrics."""
    mark = len(caller.events)
    caller.send({"type": "input.text", "text": text})
    await caller.wait_event("response.audio.started", timeout, after=mark)
    await caller.wait_event("response.audio.done", timeout, after=mark)
    return await caller.wait_event("metrics", timeout, after=mark)


async def error_after(caller: SyntheticCaller, mark: int, timeout: float = 30) -> dict[str, Any]:
    event = await caller.wait_event("error", timeout, after=mark)
    assert isinstance(event.get("message"), str) and event["message"]
    return event


async def calls_listed(base: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/calls") as resp:
        assert resp.status == 200
        return (await resp.json())["calls"]


async def hang_up_all(base: str, made: list[SyntheticCaller], timeout: float = 10) -> None:
    for caller in made:
        await caller.hangup()
    made.clear()
    deadline = time.monotonic() + timeout
    while await calls_listed(base):
        assert time.monotonic() < deadline, await calls_listed(base)
        await asyncio.sleep(0.1)


async def test_llm_error_is_reported_and_the_call_goes_on(
    faulty_server: str, callers: list[SyntheticCaller]
) -> None:
    a = await connect(faulty_server, callers)
    b = await connect(faulty_server, callers)
    mark = len(a.events)
    a.send({"type": "input.text", "text": f"Please {FAIL_WORD} now."})
    healthy_b = asyncio.ensure_future(typed_turn_works(b))  # meanwhile, on the other call
    event = await error_after(a, mark)
    assert event["code"] == "llm_failed", event
    assert "went away" in event["message"]
    assert a.events_of("bot.state")[-1]["state"] == "listening"
    await typed_turn_works(a)  # the failed call still answers
    await healthy_b
    mark = len(a.events)
    a.send({"type": "input.text", "text": f"Now {CRASH_WORD}."})
    assert (await error_after(a, mark))["code"] == "pipeline_failed"
    await typed_turn_works(a)
    assert {c["state"] for c in await calls_listed(faulty_server)} == {"active"}
    await hang_up_all(faulty_server, callers)


async def test_hanging_llm_times_out_and_the_call_goes_on(
    faulty_server: str, callers: list[SyntheticCaller]
) -> None:
    a = await connect(faulty_server, callers)
    b = await connect(faulty_server, callers)
    mark = len(a.events)
    sent = time.monotonic()
    a.send({"type": "input.text", "text": f"Please {HANG_WORD}."})
    event = await error_after(a, mark, timeout=LLM_TIMEOUT_S + 10)
    took = time.monotonic() - sent
    assert event["code"] == "llm_timeout", event
    assert LLM_TIMEOUT_S - 0.5 < took < LLM_TIMEOUT_S + 5, took
    await asyncio.gather(typed_turn_works(a), typed_turn_works(b))
    await hang_up_all(faulty_server, callers)


async def test_asr_failure_is_reported_and_typing_still_works(
    deaf_server: str, callers: list[SyntheticCaller], question: speech.Clip
) -> None:
    a = await connect(deaf_server, callers)
    mark = len(a.events)
    await a.say(question.pcm, question.rate)
    event = await error_after(a, mark)
    assert event["code"] == "pipeline_failed", event
    assert "recognizer" in event["message"]
    await typed_turn_works(a)
    await hang_up_all(deaf_server, callers)


def _offered_opus_payload_type(caller: SyntheticCaller) -> int:
    match = re.search(r"a=rtpmap:(\d+) opus/48000", caller.pc.localDescription.sdp)
    assert match, "no opus in the offer"
    return int(match.group(1))


async def test_garbage_packets_leave_the_server_and_other_calls_working(
    faulty_server: str, callers: list[SyntheticCaller]
) -> None:
    """A caller sends junk on its ICE path: random datagrams, unencrypted "RTP", and valid
    SRTP packets (a second SSRC, the negotiated Opus payload type) carrying random payloads
    that reach the server's Opus decoder."""
    bad = await connect(faulty_server, callers)
    good = await connect(faulty_server, callers)
    dtls = bad.pc.getTransceivers()[0].sender.transport
    ice = dtls.transport._connection
    rng = np.random.default_rng(7)
    pt = _offered_opus_payload_type(bad)
    seq, ts = 1000, 0
    for i in range(600):
        size = int(rng.integers(1, 1200))
        junk = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        if i % 3 == 0:
            await ice.send(junk)  # any first byte: DTLS, RTP or nothing
        elif i % 3 == 1:
            await ice.send(bytes([0x80, pt]) + junk)  # plain-text "RTP": SRTP rejects it
        else:
            packet = RtpPacket(payload_type=pt, sequence_number=seq & 0xFFFF,
                               timestamp=ts & 0xFFFFFFFF, ssrc=0x5EED)
            packet.payload = junk[: max(1, size // 4)]
            await dtls._send_rtp(packet.serialize())  # encrypted: decoded as Opus
            seq, ts = seq + int(rng.integers(1, 5)), ts + 960
        if i % 20 == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)
    async with aiohttp.ClientSession() as http, http.get(f"{faulty_server}/healthz") as resp:
        assert resp.status == 200
    await typed_turn_works(good)
    listed = {c["call_id"]: c for c in await calls_listed(faulty_server)}
    assert listed[good.call_id]["state"] == "active"
    assert listed[bad.call_id]["state"] == "active"  # aiortc drops what it cannot use
    await typed_turn_works(bad)
    await hang_up_all(faulty_server, callers)


async def test_loud_noise_from_the_microphone_is_harmless(
    faulty_server: str, callers: list[SyntheticCaller]
) -> None:
    caller = await connect(faulty_server, callers)
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(48_000 * 3) * 12_000).clip(-32768, 32767).astype(np.int16)
    await caller.say(noise, 48_000)
    await asyncio.sleep(1.5)
    assert {c["state"] for c in await calls_listed(faulty_server)} == {"active"}
    assert all(e.get("code") != "internal" for e in caller.events_of("error"))
    await typed_turn_works(caller)
    await hang_up_all(faulty_server, callers)


async def test_a_caller_that_stops_sending_audio_hits_the_idle_timeout(
    start_server: ServerFactory, callers: list[SyntheticCaller]
) -> None:
    base = await start_server(FAULT_CONFIG.replace(
        limits=Limits(call_rate_per_minute=100_000, idle_timeout_s=2)))
    quiet = await connect(base, callers)
    other = await connect(base, callers)
    quiet.pc.getTransceivers()[0].sender.replaceTrack(None)  # no more RTP; ICE stays up
    stopped = time.monotonic()
    deadline = stopped + 8
    spoke = stopped - 1
    while quiet.call_id in {c["call_id"] for c in await calls_listed(base)}:
        assert time.monotonic() < deadline, "the silent call was not ended"
        if time.monotonic() - spoke > 0.8:  # the other caller stays active (silence is idle)
            spoke = time.monotonic()
            other.send({"type": "input.text", "text": "Still here."})
        await asyncio.sleep(0.1)
    took = time.monotonic() - stopped
    assert 1.5 < took < 5, took
    assert [c["call_id"] for c in await calls_listed(base)] == [other.call_id]
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        assert 'callbot_calls_ended_total{reason="idle_timeout"} 1.0' in await resp.text()
    await hang_up_all(base, callers)

