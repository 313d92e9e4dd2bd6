"""Real calls end to end: an aiortc synthetic caller talks to the real server (real VAD,
Whisper, LLM and Piper) over loopback ICE, and checks what it hears and the events it gets."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import pytest

from callbot.loadtest.caller import SyntheticCaller, speech_end_offset, speech_start_offset
from callbot.pipeline.engines import Engines
from callbot.signalling.app import create_app
from callbot.signalling.config import CallbotConfig, Limits
from callbot.signalling.server.state import STATE
from support import speech
from tests.conftest import LOOPBACK, TEST_CONFIG, ServerFactory

pytestmark = pytest.mark.e2e

T = TypeVar("T")
SHORT_LIMITS = CallbotConfig(
    ice_hosts=(LOOPBACK,),
    limits=Limits(disconnect_grace_s=2, idle_timeout_s=4, call_rate_per_minute=100_000),
)
# Own servers (not the shared one), so the per-client set-up rate of other test files' calls
# from 127.0.0.1 does not refuse ours.
E2E_CONFIG = TEST_CONFIG.replace(limits=Limits(call_rate_per_minute=100_000))
LONG_REPLY = "Tell me a long story about a brave dragon who lives in a castle by the sea."


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


async def speak(caller: SyntheticCaller, clip: speech.Clip) -> tuple[float, float, float]:
    """Say the clip; returns when its speech began and ended going out, and when all of it had.

    Marks at the speech edges rather than arithmetic from the clip length: on a loaded machine
    the microphone's pacing can slip, and the clip then takes longer than its length to send.
    """
    first = int(speech_start_offset(clip.pcm, clip.rate) * clip.rate)
    last = max(first, int(speech_end_offset(clip.pcm, clip.rate) * clip.rate))
    marks = [caller.mic.say(part, clip.rate) for part in
             (clip.pcm[:first], clip.pcm[first:last], clip.pcm[last:])]
    started, ended, done = [await mark for mark in marks]
    return started, ended, done


async def eventually(probe: Callable[[], T | None], timeout: float, step: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(step)


async def list_calls(base: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/calls") as resp:
        assert resp.status == 200
        return (await resp.json())["calls"]


async def metrics_text(base: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        return await resp.text()


async def wait_call_gone(base: str, call_id: str, timeout: float) -> float:
    """Seconds until GET /v1/calls no longer lists the call."""
    started = time.monotonic()
    while any(c["call_id"] == call_id for c in await list_calls(base)):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"call {call_id} still listed after {timeout} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
async def caller_factory() -> AsyncIterator[Callable[..., Any]]:
    """Connected synthetic callers, all hung up at the end of the test."""
    callers: list[SyntheticCaller] = []

    async def make(base: str, **kwargs: Any) -> SyntheticCaller:
        caller = SyntheticCaller(base, **kwargs)
        callers.append(caller)
        await caller.connect()
        return caller

    yield make
    for caller in callers:
        await caller.hangup()


@pytest.fixture(scope="module")
def barge_clip() -> speech.Clip:
    return speech.espeak("Wait, wait. Tell me about cats instead.", 48_000).padded(0.0, 0.0)


@pytest.fixture(scope="module")
async def call_server(start_server: ServerFactory) -> str:
    return await start_server(E2E_CONFIG)


@pytest.fixture(scope="module")
async def short_limits_server(start_server: ServerFactory) -> str:
    return await start_server(SHORT_LIMITS)


async def test_spoken_question_gets_spoken_answer(
    call_server: str, question: speech.Clip, engines: Engines, caller_factory: Callable[..., Any]
) -> None:
    caller: SyntheticCaller = await caller_factory(call_server)
    start = len(caller.events)
    said = asyncio.ensure_future(speak(caller, question))
    await caller.wait_event("response.audio.done", timeout=120, after=start)
    _, speech_end, _ = await said
    metrics = await caller.wait_event("metrics", timeout=5, after=start)

    events = [data for _, data in caller.events[start:]]
    types = [e["type"] for e in events]
    final = next(e for e in events if e["type"] == "transcript.final")
    speech.assert_heard(final["text"], question.text)
    reply = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert reply.strip(), types
    assert types.index("transcript.final") < types.index("response.audio.started")
    assert types.index("response.audio.started") < types.index("response.audio.done")
    for key in ("asr_ms", "llm_first_token_ms", "first_audio_ms"):
        assert isinstance(metrics.get(key), int | float) and metrics[key] > 0, metrics

    t_voice = caller.heard.first_voice_after(speech_end)
    assert t_voice is not None, "heard nothing from the bot after speaking"
    voice_to_voice = t_voice - speech_end
    print(f"\nvoice-to-voice latency: {voice_to_voice * 1000:.0f} ms "
          f"(server first_audio_ms {metrics['first_audio_ms']:.0f}, asr_ms "
          f"{metrics['asr_ms']:.0f}, llm_first_token_ms {metrics['llm_first_token_ms']:.0f}); "
          f"reply: {reply.strip()!r}")
    assert 0 < voice_to_voice < 10.0  # generous: the 2 cores are shared; the figure is printed

    await asyncio.sleep(0.5)  # the tail of the reply is still in flight after audio.done
    t_done = caller.event_time("response.audio.done")
    assert t_done is not None
    heard = caller.heard.audio_between(t_voice - 0.1, t_done + 0.5)
    assert len(heard) / 16_000 > 0.5
    transcript = (await engines.asr.transcribe(heard)).text
    common = words(transcript) & words(reply)
    print(f"heard bot audio transcribed: {transcript!r}")
    assert len(common) >= min(2, len(words(reply))), (transcript, reply)
    print(f"gaps in the bot's audio at the caller: {caller.heard.gaps}")


async def test_barge_in_stops_the_bot_quickly(
    call_server: str, barge_clip: speech.Clip, caller_factory: Callable[..., Any]
) -> None:
    caller: SyntheticCaller = await caller_factory(call_server)
    start = len(caller.events)
    caller.send({"type": "input.text", "text": LONG_REPLY})
    await caller.wait_event("response.audio.started", timeout=30, after=start)
    t_started = time.monotonic()
    await eventually(lambda: caller.heard.first_voice_after(t_started - 0.2), timeout=3)
    # Well into the reply, after the echo detector (pipeline/echo.py) has heard that nothing
    # comes back (~1.3 s of the bot's first words): before that, a caller quieter than the bot
    # is held back like an echo (a known limit, in docs/languages-safety.md and CHANGELOG).
    await asyncio.sleep(1.6)

    t_speech, t_speech_end, _ = await speak(caller, barge_clip)
    interrupted = await caller.wait_event("response.interrupted", timeout=5, after=start)
    assert interrupted["reason"] == "barge_in", interrupted
    assert not caller.events_of("response.audio.done"), "the reply ended before the barge-in"
    talking = caller.heard.first_voice_after(t_speech - 0.6, min_frames=1)
    assert talking is not None and talking < t_speech + 0.1, "the bot was not talking"

    t_stop = caller.heard.silence_after(t_speech, min_frames=10)  # 200 ms of silence
    assert t_stop is not None
    reaction = t_stop - t_speech
    t_vad = caller.event_time("vad.speech_started", after=t_speech - 0.1)
    t_int = caller.event_time("response.interrupted")
    print(f"\nbarge-in: bot audio stopped at the caller {reaction * 1000:.0f} ms after the "
          f"caller's speech began (vad.speech_started at +{((t_vad or 0) - t_speech) * 1000:.0f} "
          f"ms, response.interrupted at +{((t_int or 0) - t_speech) * 1000:.0f} ms)")
    assert reaction < 0.5
    # ... and it stayed quiet while the caller was still talking.
    again = caller.heard.first_voice_after(t_stop)
    assert again is None or again >= t_speech_end, again - t_speech
    # The voice paused at the onset of the caller's speech; counted when the call ends.
    await caller.hangup()
    await wait_call_gone(call_server, caller.call_id, timeout=10)
    paused = next(float(line.split()[-1]) for line in (await metrics_text(call_server))
                  .splitlines() if line.startswith("callbot_onset_pauses_total "))
    assert paused >= 1


async def test_typed_turn_cancel_and_bad_messages(
    call_server: str, caller_factory: Callable[..., Any]
) -> None:
    caller: SyntheticCaller = await caller_factory(call_server)
    # Malformed messages: each answered with an `error` event, the call goes on.
    caller._channel.send("this is not json")
    caller._channel.send(b"\x00\x01binary")
    caller.send({"type": "no.such.type"})
    caller.send({"type": "input.text"})
    caller.send({"text": "no type"})
    caller._channel.send("x" * 5000)
    await eventually(lambda: len(caller.events_of("error")) >= 6, timeout=5)
    codes = [e["code"] for e in caller.events_of("error")]
    assert codes == ["bad_message", "bad_message", "unknown_type", "bad_message",
                     "bad_message", "bad_message"], codes

    # A typed turn is answered out loud.
    start = len(caller.events)
    t_sent = time.monotonic()
    caller.send({"type": "input.text", "text": "Say hello."})
    final = await caller.wait_event("transcript.final", timeout=10, after=start)
    assert final["text"] == "Say hello."
    await caller.wait_event("response.audio.started", timeout=30, after=start)
    await caller.wait_event("response.audio.done", timeout=30, after=start)
    assert caller.heard.first_voice_after(t_sent) is not None
    reply = "".join(d["delta"] for _, d in caller.events[start:]
                    if d["type"] == "response.text.delta")
    assert reply.strip()

    # response.cancel while it speaks.
    start = len(caller.events)
    caller.send({"type": "input.text", "text": LONG_REPLY})
    await caller.wait_event("response.audio.started", timeout=30, after=start)
    await asyncio.sleep(0.5)
    t_cancel = time.monotonic()
    caller.send({"type": "response.cancel"})
    interrupted = await caller.wait_event("response.interrupted", timeout=5, after=start)
    assert interrupted["reason"] == "cancelled"
    await eventually(lambda: caller.heard.silence_after(t_cancel, min_frames=10), timeout=2)
    t_quiet = caller.heard.silence_after(t_cancel, min_frames=10)
    assert t_quiet is not None and t_quiet - t_cancel < 0.5
    assert not [d for _, d in caller.events[start:] if d["type"] == "response.audio.done"]
    calls = {c["call_id"]: c for c in await list_calls(call_server)}
    assert calls[caller.call_id]["state"] == "active"


async def test_dead_peer_is_dropped(
    short_limits_server: str, caller_factory: Callable[..., Any]
) -> None:
    caller: SyntheticCaller = await caller_factory(short_limits_server)
    assert caller.call_id in [c["call_id"] for c in await list_calls(short_limits_server)]
    await caller.hangup(delete=False)  # the peer goes away without DELETE
    took = await wait_call_gone(short_limits_server, caller.call_id, timeout=8)
    print(f"\nclosed peer dropped after {took:.1f} s")


async def test_vanished_peer_is_dropped_after_grace(
    short_limits_server: str, caller_factory: Callable[..., Any]
) -> None:
    """A peer that disappears without a word (crash, network loss): no DTLS close, no RTCP,
    nothing. aiortc has no 'disconnected' state and ICE consent only fails after ~30 s."""
    caller: SyntheticCaller = await caller_factory(short_limits_server)
    ice = caller.pc.getTransceivers()[0].sender.transport.transport
    for protocol in ice._connection._protocols:  # its sockets close; nothing is sent
        protocol.transport.close()
    took = await wait_call_gone(short_limits_server, caller.call_id, timeout=10)
    print(f"\nvanished peer dropped after {took:.1f} s (grace 2 s)")
    assert took < 3.8  # before the 4 s idle timeout: ended as disconnected
    assert 'callbot_calls_ended_total{reason="disconnected"} 1.0' in await metrics_text(
        short_limits_server
    )


async def test_silent_caller_hits_idle_timeout(
    short_limits_server: str, caller_factory: Callable[..., Any]
) -> None:
    caller: SyntheticCaller = await caller_factory(short_limits_server)
    caller.mic.stop()  # no more RTP audio; ICE and the data channel stay up
    t_stop = time.monotonic()
    await asyncio.sleep(1.5)
    calls = {c["call_id"]: c for c in await list_calls(short_limits_server)}
    assert calls[caller.call_id]["state"] == "active"
    await wait_call_gone(short_limits_server, caller.call_id, timeout=6)
    took = time.monotonic() - t_stop
    assert 3.5 < took < 7.0, took
    assert 'callbot_calls_ended_total{reason="idle_timeout"} 1.0' in await metrics_text(
        short_limits_server
    )


async def test_video_frames_are_received(
    call_server: str, caller_factory: Callable[..., Any]
) -> None:
    caller: SyntheticCaller = await caller_factory(call_server, send_video=True)

    async def video_frames() -> int:
        calls = {c["call_id"]: c for c in await list_calls(call_server)}
        return calls[caller.call_id]["video_frames_in"]

    deadline = time.monotonic() + 5
    while await video_frames() == 0:
        assert time.monotonic() < deadline, "no video frame reached the server"
        await asyncio.sleep(0.2)
    assert await video_frames() > 0


async def test_one_call_failing_leaves_the_others(
    start_server: ServerFactory, engines: Engines, question: speech.Clip,
    caller_factory: Callable[..., Any],
) -> None:
    app = create_app(TEST_CONFIG, engines=engines)
    base = await start_server(app=app)
    crashing: SyntheticCaller = await caller_factory(base)
    dropped: SyntheticCaller = await caller_factory(base)
    survivor: SyntheticCaller = await caller_factory(base)
    assert len(await list_calls(base)) == 3

    # A bug inside one call: its audio pipeline raises on the next frame.
    call = app[STATE].registry.get(crashing.call_id)
    assert call is not None

    def boom(frame: Any) -> None:
        raise RuntimeError("injected failure")

    call.session.feed = boom  # type: ignore[method-assign]
    error = await crashing.wait_event("error", timeout=5)
    assert error["code"] == "internal"
    await wait_call_gone(base, crashing.call_id, timeout=5)
    assert call.close_reason == "crashed"
    # Another peer vanishes abruptly.
    await dropped.hangup(delete=False)
    await wait_call_gone(base, dropped.call_id, timeout=10)

    # The survivor still completes a spoken turn.
    start = len(survivor.events)
    said = asyncio.ensure_future(speak(survivor, question))
    final = await survivor.wait_event("transcript.final", timeout=90, after=start)
    speech.assert_heard(final["text"], question.text)
    await survivor.wait_event("response.audio.done", timeout=120, after=start)
    await said
    assert [c["call_id"] for c in await list_calls(base)] == [survivor.call_id]
