"""VoiceSession driven directly with 16 kHz frames of speech, on the real engines: turn-taking,
speculation, barge-in and typed turns. Audio goes to an in-memory output."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from callbot.pipeline.audio import FRAME_MS, FRAME_SAMPLES, PIPELINE_RATE
from callbot.pipeline.engines import Engines
from callbot.pipeline.fakes import EventRecorder as Recorder
from callbot.pipeline.fakes import MemoryOutput
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.settings import ReplySettings, TurnSettings
from support import speech

QUESTION = "How many legs does a spider have?"
# Short replies: the tests are about turn-taking.
SETTINGS = TurnSettings(reply=ReplySettings(max_tokens=24))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * PIPELINE_RATE), dtype=np.int16)


def spoken(text: str) -> np.ndarray:
    """espeak speech at 16 kHz without its own leading/trailing silence."""
    pcm = speech.espeak(text, PIPELINE_RATE).pcm
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    return pcm[loud[0] : loud[-1] + 1]


async def feed(session: VoiceSession, pcm: np.ndarray, *, speed: float = 1.0,
               until: Recorder | None = None, event: str = "") -> None:
    """Feed 20 ms frames paced like a call (`speed` times real time), letting the session's
    tasks run between frames; stop early once `until` has recorded `event`."""
    started = time.monotonic()
    for i in range(len(pcm) // FRAME_SAMPLES):
        session.feed(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        if until is not None and event in until.names():
            return
        delay = started + (i + 1) * FRAME_MS / 1000 / speed - time.monotonic()
        await asyncio.sleep(max(0.0, delay))


def new_session(engines: Engines, output: MemoryOutput) -> tuple[VoiceSession, Recorder]:
    recorder = Recorder()
    return VoiceSession(engines, output=output, emit=recorder, settings=SETTINGS), recorder


async def test_spoken_question_is_answered(engines: Engines) -> None:
    output = MemoryOutput()
    session, rec = new_session(engines, output)
    try:
        # 1.5 s of silence: Smart Turn may hear espeak's flat ending as unfinished (p = 0.22
        # on 2026-12-04), and then only the ~1 s the policy asks for ends the turn.
        await feed(session, np.concatenate([silence(0.3), spoken(QUESTION), silence(1.5)]))
        metrics = await rec.wait_for("metrics")
        final = rec.all("transcript.final")
        assert len(final) == 1
        speech.assert_heard(final[0]["text"], QUESTION)
        deltas = [f["delta"] for f in rec.all("response.text.delta")]
        assert len(deltas) >= 2 and "".join(deltas).strip()
        # Speculative work is held back until the turn is confirmed over, then released in
        # order: nothing about the response comes before the transcript.
        names = rec.names()
        assert names.index("vad.speech_started") < names.index("vad.speech_stopped") <= (
            names.index("transcript.final")
        ) < names.index("response.text.delta") < names.index("metrics")
        assert names.index("transcript.final") < names.index("response.audio.started")
        assert names.index("response.audio.done") < names.index("metrics")
        assert metrics["turn_id"] == final[0]["turn_id"]
        assert metrics["asr_ms"] > 0 and metrics["llm_first_token_ms"] > 0
        assert metrics["tts_first_ms"] > 0
        # A question ends the turn after 300 ms of silence (plus transcription time).
        assert 250 <= metrics["end_of_turn_ms"] <= 3000
        assert output.seconds > 0.3 and not output.clears
        assert rec.all("bot.state")[-1]["state"] == "listening"
        assert [m["role"] for m in session.history] == ["system", "user", "assistant"]
        assert session.history[1]["content"] == final[0]["text"]
        assert session.history[2]["content"] == "".join(deltas).strip()
    finally:
        await session.close()


async def test_speech_during_the_reply_interrupts_it(engines: Engines) -> None:
    output = MemoryOutput(realtime=True)
    session, rec = new_session(engines, output)
    try:
        await feed(session, np.concatenate([silence(0.3), spoken(QUESTION), silence(0.5)]))
        # The caller's line keeps sending silence while the bot thinks.
        await feed(session, silence(20), until=rec, event="response.audio.started")
        assert "response.audio.started" in rec.names()
        assert output.pending_seconds() > 0.3  # the reply is playing
        turn_id = rec.all("response.audio.started")[0]["turn_id"]
        starts_before = len(rec.all("vad.speech_started"))

        await feed(session, np.concatenate([spoken("Wait, stop please."), silence(0.2)]),
                   until=rec, event="response.interrupted")
        interrupted = await rec.wait_for("response.interrupted", timeout=2)
        assert interrupted["turn_id"] == turn_id and interrupted["reason"] == "barge_in"
        assert len(rec.all("vad.speech_started")) == starts_before + 1
        assert rec.index("vad.speech_started") < rec.index("response.interrupted")
        assert len(output.clears) == 1 and output.clears[0] > 0  # queued audio dropped
        assert output.pending_seconds() == 0
        assert session.state == "listening"
        assert "metrics" not in rec.names()  # the interrupted turn never completed
        # History keeps only what the caller heard of the reply, if anything.
        heard = interrupted["spoken_text"]
        if heard:
            assert session.history[-1] == {"role": "assistant", "content": heard}
    finally:
        await session.close()


async def test_greeting_then_pause_then_question_is_one_turn(engines: Engines) -> None:
    """'Hello there.' sounds unfinished: a pause that would end a statement (550 ms) must not
    make the bot answer the greeting alone. 800 ms of silence is well past 550 ms and short of
    the 1200 ms that ends an unfinished turn. The question is followed by 1.5 s of silence, as
    a call goes on sending audio: Smart Turn often hears espeak's flat question end as
    unfinished (p ~0.2: a wait of ~1 s)."""
    output = MemoryOutput()
    session, rec = new_session(engines, output)
    try:
        audio = np.concatenate([
            silence(0.3), spoken("Hello there."), silence(0.8), spoken(QUESTION), silence(1.5),
        ])
        await feed(session, audio)
        await rec.wait_for("metrics")
        finals = rec.all("transcript.final")
        assert len(finals) == 1, finals
        speech.assert_heard(finals[0]["text"], "Hello there. " + QUESTION)
        assert "response.interrupted" not in rec.names()
        assert rec.names().count("response.audio.started") == 1
        assert rec.index("transcript.final") < rec.index("response.text.delta")
        assert [m["role"] for m in session.history] == ["system", "user", "assistant"]
    finally:
        await session.close()


async def test_typed_text_is_answered(engines: Engines) -> None:
    output = MemoryOutput()
    session, rec = new_session(engines, output)
    try:
        session.submit_text("  How many legs does a spider have?  ")
        metrics = await rec.wait_for("metrics")
        assert rec.all("transcript.final")[0]["text"] == QUESTION
        assert "asr_ms" not in metrics and metrics["llm_first_token_ms"] > 0
        assert rec.all("response.text.delta") and output.seconds > 0.3
        assert [m["role"] for m in session.history] == ["system", "user", "assistant"]
        assert session.history[1]["content"] == QUESTION
        session.submit_text("   ")  # nothing typed: no turn
        await asyncio.sleep(0.05)
        assert len(rec.all("transcript.final")) == 1
    finally:
        await session.close()


async def test_silence_and_noise_start_no_turn(engines: Engines) -> None:
    session, rec = new_session(engines, MemoryOutput())
    try:
        noise = np.random.default_rng(0).standard_normal(PIPELINE_RATE) * 100
        await feed(session, np.concatenate([silence(0.5), noise.astype(np.int16)]), speed=20)
        await asyncio.sleep(0.1)
        assert rec.names() == []
        assert session.history == session.history[:1]
    finally:
        await session.close()


async def test_closed_session_ignores_input(engines: Engines) -> None:
    session, rec = new_session(engines, MemoryOutput())
    await session.close()
    await feed(session, np.concatenate([spoken(QUESTION), silence(0.5)]), speed=50)
    session.submit_text("Hello?")
    await asyncio.sleep(0.1)
    assert rec.names() == []


@pytest.fixture(autouse=True)
async def _engines_idle(engines: Engines) -> None:
    """Start each test with the shared models idle (a previous test may have left work)."""
    for engine in (engines.asr, engines.llm, engines.tts):
        worker = getattr(engine, "_worker", None)
        for _ in range(500):
            if worker is None or worker.idle:
                break
            await asyncio.sleep(0.02)
