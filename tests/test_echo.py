"""Echo: the bot's own voice back through a caller's speakerphone (no echo cancellation on
the caller's side) must not make the bot interrupt itself; the caller's real barge-in over the
echo still stops it. A real server with `[turn.echo]` on, a real aiortc caller whose
microphone plays back what it hears (`MicrophoneTrack.echo_gain`)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
import pytest

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.echo import EchoCanceller
from callbot.pipeline.settings import EchoSettings
from support import speech
from tests.conftest import TEST_CONFIG, ServerFactory

LONG_REPLY = "Tell me a long story about a brave dragon who lives in a castle by the sea."


def test_aec3_takes_the_echo_out_and_lets_the_caller_through() -> None:
    bot = speech.espeak("Spiders have eight legs. They also have many eyes, and they spin "
                        "silk webs to catch insects.", 16_000).pcm
    caller = speech.espeak("Wait, stop please.", 16_000).pcm
    delay = int(0.12 * 16_000)
    echo = np.zeros_like(bot)
    echo[delay:] = (bot[:-delay] * 10 ** (-10 / 20)).astype(np.int16)  # -10 dB, 120 ms late
    near = echo.astype(np.int32)
    at = len(bot) - len(caller) - 1600
    near[at:at + len(caller)] += caller  # the caller talks over the end of it
    near16 = np.clip(near, -32768, 32767).astype(np.int16)
    aec = EchoCanceller()
    out = []
    for i in range(0, len(bot) - 320 + 1, 320):
        aec.far(bot[i:i + 320])
        out.append(aec.near(near16[i:i + 320]))
    cleaned = np.concatenate(out).astype(np.float64)

    def power(x: np.ndarray) -> float:
        return float(np.mean(x.astype(np.float64) ** 2)) + 1e-9

    echo_only = slice(16_000, at)  # after a second to converge, before the caller speaks
    erle = 10 * np.log10(power(echo[echo_only]) / power(cleaned[echo_only]))
    assert erle > 20, erle
    kept = 10 * np.log10(power(cleaned[at:at + len(caller)]) / power(caller))
    assert kept > -6, kept  # the caller's words pass (AEC3 attenuates double talk a little)
    assert aec.cpu_s / aec.frames < 0.005  # well under a millisecond per 20 ms frame


@pytest.fixture(scope="module")
async def echo_server(start_server: ServerFactory) -> str:
    turn = dataclasses.replace(TEST_CONFIG.turn, echo=EchoSettings(enabled=True))
    return await start_server(dataclasses.replace(TEST_CONFIG, turn=turn))


async def speakerphone(url: str, db: float = -10.0, delay_ms: float = 120.0) -> SyntheticCaller:
    caller = SyntheticCaller(url)
    caller.mic.echo_gain = 10 ** (db / 20)
    caller.mic.echo_delay_s = delay_ms / 1000
    await caller.connect()
    return caller


@pytest.mark.e2e
async def test_a_speakerphone_caller_does_not_make_the_bot_interrupt_itself(
        echo_server: str) -> None:
    caller = await speakerphone(echo_server)
    try:
        caller.send({"type": "input.text", "text": LONG_REPLY})
        await caller.wait_event("response.audio.started", timeout=30)
        done = await caller.wait_event("response.audio.done", timeout=60)
        assert not caller.events_of("response.interrupted"), caller.events_of(
            "response.interrupted")
        talked = caller.heard.first_voice_after(0.0)
        assert talked is not None
        assert done and time.monotonic() - talked > 3.0  # a long reply, played to its end
        assert len(caller.events_of("transcript.final")) == 1  # its own voice was never a turn
    finally:
        await caller.hangup()


@pytest.mark.e2e
async def test_wait_stop_over_the_echo_still_stops_the_bot(echo_server: str) -> None:
    caller = await speakerphone(echo_server)
    try:
        caller.send({"type": "input.text", "text": LONG_REPLY})
        await caller.wait_event("response.audio.started", timeout=30)
        await asyncio.sleep(1.5)  # well into the reply (and the echo)
        clip = speech.espeak("Wait, stop please.", 48_000)
        t_speech = time.monotonic()
        await caller.mic.say(clip.pcm, clip.rate)
        interrupted = await caller.wait_event("response.interrupted", timeout=8)
        assert interrupted["reason"] == "barge_in"
        stop = caller.heard.silence_after(t_speech, min_frames=10)
        assert stop is not None and stop - t_speech < 0.5, stop and stop - t_speech
    finally:
        await caller.hangup()
