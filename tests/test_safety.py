"""Safety in a live session, with scripted engines (the real LLM cannot be made to say a
flagged sentence on demand) and a real moderation HTTP server on loopback:

- an abusive caller (typed or spoken, English, Chinese, German) gets a calm spoken reply in
  their language instead of the LLM's, and a `safety.flagged` event;
- a flagged bot sentence never reaches the audio output, the text events or the history;
- the moderation endpoint down (500) or slow: the call goes on, within the timeout, failing
  open or closed as configured;
- bad input: empty, whitespace, emoji-only, very long and mixed-script turns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from callbot.pipeline.engines import Engines
from callbot.pipeline.fakes import (
    EnergyVad,
    EventRecorder,
    MemoryOutput,
    ScriptedASR,
    ScriptedLLM,
    ScriptedTTS,
    silence_frames,
    voice_frames,
)
from callbot.pipeline.lang import CallLanguage
from callbot.pipeline.safety.guard import build_guard
from callbot.pipeline.safety.settings import SafetySettings
from callbot.pipeline.safety.wordlists import DEFAULT_REFUSALS
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.tts.base import SynthesizedAudio

LOOPBACK = "127.0.0.1"


class TaggedTTS(ScriptedTTS):
    """Each sentence's audio is a tone whose length encodes which sentence it is, so the test
    can tell exactly which sentences reached the output."""

    def __init__(self) -> None:
        super().__init__(delay_s=0.02)
        self.by_length: dict[int, str] = {}

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        self.texts.append(text)
        await asyncio.sleep(self.delay_s)
        n = 1600 + 160 * len(self.by_length)  # 0.1 s + 10 ms per distinct sentence
        self.by_length.setdefault(n, text)
        pcm = (6000 * np.sin(np.arange(n) * 0.1)).astype(np.int16)
        return SynthesizedAudio(pcm, self.sample_rate, self.delay_s * 1000)


def make(*, reply: str = "A spider has eight legs.", finals: tuple[str, ...] = ("Hi",),
         settings: SafetySettings | None = None, language: str | None = None,
         tts: ScriptedTTS | None = None) -> tuple[VoiceSession, EventRecorder, MemoryOutput,
                                                   ScriptedLLM, ScriptedTTS]:
    llm = ScriptedLLM(reply, first_token_s=0.02, token_s=0.005)
    voice = tts or ScriptedTTS(seconds_per_char=0.01)
    engines = Engines(asr=ScriptedASR(list(finals), final_s=0.03), llm=llm, tts=voice)
    guard = build_guard(settings or SafetySettings())
    assert guard is not None
    output, recorder = MemoryOutput(), EventRecorder()
    state = CallLanguage(allowed=("en", "zh", "de", "fr", "es"), fixed=language)
    session = VoiceSession(engines, output=output, emit=recorder, vad=EnergyVad(),
                           guards=[guard], language_state=state)
    return session, recorder, output, llm, voice


async def close_guards(session: VoiceSession) -> None:
    for guard in session.guards:
        await guard.close()


async def feed(session: VoiceSession, frames: list[np.ndarray]) -> None:
    started = time.monotonic()
    for i, frame in enumerate(frames):
        session.feed(frame)
        await asyncio.sleep(max(0.0, started + (i + 1) * 0.02 - time.monotonic()))


async def test_abusive_typed_turn_gets_a_calm_spoken_refusal_and_an_event() -> None:
    session, rec, output, llm, tts = make()
    try:
        session.submit_text("Fuck you, you stupid machine")
        await rec.wait_for("response.audio.done", 3)
        flagged = rec.all("safety.flagged")
        assert flagged == [{"source": "caller", "categories": ["harassment"],
                            "action": "refused"}]
        assert llm.requests == []  # the LLM never saw it
        assert " ".join(tts.texts) == DEFAULT_REFUSALS["en"]
        assert output.seconds > 0.3  # the refusal was spoken
        reply = "".join(e["delta"] for e in rec.all("response.text.delta"))
        assert reply == DEFAULT_REFUSALS["en"]
        assert rec.index("safety.flagged") < rec.index("response.audio.started")
        metrics = await rec.wait_for("metrics", 2)
        assert metrics["moderation_ms"] < 50, metrics  # word list: well under a millisecond
    finally:
        await session.close()
        await close_guards(session)


async def test_abusive_spoken_chinese_turn_is_refused_in_chinese() -> None:
    session, rec, output, llm, tts = make(finals=("你这个傻逼，滚蛋",), language="zh")
    try:
        await feed(session, voice_frames(600) + silence_frames(700))
        await rec.wait_for("response.audio.done", 3)
        assert rec.all("transcript.final")[0]["text"] == "你这个傻逼，滚蛋"
        assert rec.all("safety.flagged")[0]["action"] == "refused"
        assert "".join(tts.texts) == DEFAULT_REFUSALS["zh"] and llm.requests == []
        assert "".join(e["delta"] for e in rec.all("response.text.delta")) == DEFAULT_REFUSALS[
            "zh"]  # Chinese sentences joined without spaces
        assert output.seconds > 0
    finally:
        await session.close()
        await close_guards(session)


async def test_german_abuse_refused_in_german_then_a_normal_turn_is_answered() -> None:
    session, rec, _, llm, tts = make(language="de", reply="Eine Spinne hat acht Beine.")
    try:
        session.submit_text("Halt die Fresse, du Idiot!")
        await rec.wait_for("response.audio.done", 3)
        assert " ".join(tts.texts) == DEFAULT_REFUSALS["de"]
        start = len(rec.events)
        session.submit_text("Wie viele Beine hat eine Spinne?")
        await asyncio.sleep(0.5)
        assert any(e.type == "response.audio.done" for e in rec.events[start:])
        assert len(rec.all("safety.flagged")) == 1
        assert tts.texts[-1] == "Eine Spinne hat acht Beine."
        # ... and the LLM was told to answer in German.
        assert any("German" in m["content"] for m in llm.requests[-1] if m["role"] == "system")
    finally:
        await session.close()
        await close_guards(session)


async def test_self_harm_gets_a_supportive_reply_not_a_rebuke() -> None:
    session, rec, _, _, tts = make()
    try:
        session.submit_text("I want to kill myself")
        await rec.wait_for("response.audio.done", 3)
        assert rec.all("safety.flagged")[0]["categories"] == ["self_harm"]
        assert "emergency" in " ".join(tts.texts)
    finally:
        await session.close()
        await close_guards(session)


async def test_warn_action_answers_anyway_with_the_event() -> None:
    session, rec, _, llm, _ = make(settings=SafetySettings(caller_action="warn"))
    try:
        session.submit_text("this shit is broken, how do I reset it?")
        await rec.wait_for("response.audio.done", 3)
        assert rec.all("safety.flagged")[0]["action"] == "warned"
        assert len(llm.requests) == 1
    finally:
        await session.close()
        await close_guards(session)


async def test_a_flagged_bot_sentence_never_reaches_the_audio_track() -> None:
    bad = "You are a stupid bitch."
    tts = TaggedTTS()
    session, rec, output, _, _ = make(
        reply=f"Sure, I can help with that. {bad} Here is the answer.", tts=tts)
    try:
        session.submit_text("Can you help me?")
        await rec.wait_for("response.audio.done", 3)
        heard = [tts.by_length[len(pcm)] for pcm, _ in output.enqueued]
        assert heard == ["Sure, I can help with that.", "Here is the answer."]
        assert rec.all("safety.flagged") == [
            {"source": "bot", "categories": ["harassment"], "action": "blocked"}]
        shown = "".join(e["delta"] for e in rec.all("response.text.delta"))
        assert "bitch" not in shown and "Here is the answer." in shown
        assert "bitch" not in session.history[-1]["content"]
        assert session.history[-1]["role"] == "assistant"
    finally:
        await session.close()
        await close_guards(session)


async def test_bot_check_is_overlapped_with_synthesis() -> None:
    """With a slow moderator the sentence costs max(synthesis, check), not their sum."""
    tts = ScriptedTTS(seconds_per_char=0.001, delay_s=0.2)
    session, rec, _, _, _ = make(reply="One. Two. Three.", tts=tts)
    guard = session.guards[0]
    original = guard.check_bot

    async def slow_check(text: str, language: str | None) -> Any:
        await asyncio.sleep(0.15)
        return await original(text, language)

    guard.check_bot = slow_check  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        session.submit_text("Count to three.")
        await rec.wait_for("response.audio.done", 5)
        elapsed = time.monotonic() - started
        # 3 sentences x 0.2 s synthesis; in sequence with the check it would be >= 1.05 s
        assert elapsed < 0.95, elapsed
    finally:
        await session.close()
        await close_guards(session)


@pytest.mark.parametrize("text", ["", "   \n\t ", "😀😀😀", "👍"])
async def test_empty_whitespace_and_emoji_only_turns_do_not_break_the_call(text: str) -> None:
    session, rec, _, _, _ = make(reply="😀 Glad to help!")
    try:
        session.submit_text(text)
        await asyncio.sleep(0.3)
        assert "error" not in rec.names()
        if text.strip():  # emoji: answered; the emoji itself is never read aloud
            assert rec.all("response.audio.done")
        else:
            assert rec.names() == []
        session.submit_text("Still there?")
        await rec.wait_for("response.audio.done", 3)
        assert "error" not in rec.names()
    finally:
        await session.close()
        await close_guards(session)


async def test_very_long_and_mixed_script_turns() -> None:
    session, rec, _, llm, _ = make()
    try:
        session.submit_text("please " * 2000 + "help")
        await rec.wait_for("response.audio.done", 3)
        assert not rec.all("safety.flagged") and len(llm.requests) == 1
        start = len(rec.events)
        session.submit_text("Hello 你好, du bist ein Arschloch")
        await asyncio.sleep(0.3)
        flagged = [e for e in rec.events[start:] if e.type == "safety.flagged"]
        assert len(flagged) == 1 and len(llm.requests) == 1
    finally:
        await session.close()
        await close_guards(session)


# ---- the moderation endpoint, a real aiohttp server on loopback -----------------------------


ServerFactory = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def http_server() -> AsyncIterator[ServerFactory]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://{LOOPBACK}:{port}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


def moderation_app(mode: str, seen: list[Any]) -> web.Application:
    """An OpenAI-compatible /v1/moderations: 'ok' flags texts containing 'forbidden';
    'error' answers 500; 'slow' answers after 3 s."""

    async def moderations(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if mode == "error":
            return web.json_response({"error": {"message": "overloaded"}}, status=500)
        if mode == "slow":
            await asyncio.sleep(3)
        flagged = "forbidden" in body["input"]
        return web.json_response({"id": "modr-1", "model": body["model"], "results": [{
            "flagged": flagged,
            "categories": {"harassment": flagged, "violence": False,
                           "self-harm/intent": False},
            "category_scores": {"harassment": 0.9 if flagged else 0.01},
        }]})

    app = web.Application()
    app.router.add_post("/v1/moderations", moderations)
    return app


async def test_moderation_endpoint_flags_what_the_lists_miss(
        http_server: ServerFactory) -> None:
    seen: list[Any] = []
    url = await http_server(moderation_app("ok", seen))
    session, rec, _, llm, tts = make(settings=SafetySettings(endpoint_url=url,
                                                             endpoint_model="mod-test"))
    try:
        session.submit_text("say the forbidden word")
        await rec.wait_for("response.audio.done", 3)
        assert rec.all("safety.flagged")[0] == {
            "source": "caller", "categories": ["harassment"], "action": "refused"}
        assert llm.requests == []
        assert seen[0] == {"model": "mod-test", "input": "say the forbidden word"}
        # A normal turn: the caller's words and each of the bot's sentences are checked.
        session.submit_text("How many legs does a spider have?")
        await asyncio.sleep(0.5)
        inputs = [body["input"] for body in seen[1:]]
        assert inputs == ["How many legs does a spider have?", "A spider has eight legs."]
        assert tts.texts[-1] == "A spider has eight legs."
    finally:
        await session.close()
        await close_guards(session)


@pytest.mark.parametrize("mode", ["error", "slow"])
async def test_moderation_endpoint_down_or_slow_fails_open_within_the_timeout(
        http_server: ServerFactory, mode: str) -> None:
    seen: list[Any] = []
    url = await http_server(moderation_app(mode, seen))
    session, rec, output, llm, _ = make(settings=SafetySettings(
        endpoint_url=url, endpoint_timeout_s=0.3, fail_open=True))
    try:
        started = time.monotonic()
        session.submit_text("How many legs does a spider have?")
        await rec.wait_for("response.audio.done", 5)
        elapsed = time.monotonic() - started
        assert seen, "the endpoint was asked"
        assert not rec.all("safety.flagged") and len(llm.requests) == 1
        assert output.seconds > 0
        # at most one caller timeout + one bot-sentence timeout (overlapped with synthesis)
        assert elapsed < 1.5, elapsed
        metrics = await rec.wait_for("metrics", 2)
        assert metrics["moderation_ms"] < 600, metrics
        assert "error" not in rec.names()
    finally:
        await session.close()
        await close_guards(session)


async def test_moderation_endpoint_down_fails_closed_when_configured(
        http_server: ServerFactory) -> None:
    url = await http_server(moderation_app("error", []))
    session, rec, output, llm, tts = make(settings=SafetySettings(
        endpoint_url=url, endpoint_timeout_s=0.3, fail_open=False))
    try:
        session.submit_text("How many legs does a spider have?")
        await rec.wait_for("response.audio.done", 5)
        assert rec.all("safety.flagged") == [{
            "source": "caller", "categories": ["moderation_unavailable"], "action": "refused"}]
        assert llm.requests == []
        # The refusal is the operator's own text: spoken without asking the endpoint again.
        assert " ".join(tts.texts) == DEFAULT_REFUSALS["en"] and output.seconds > 0
        assert "error" not in rec.names()
    finally:
        await session.close()
        await close_guards(session)


async def test_moderation_endpoint_unreachable_port(http_server: ServerFactory) -> None:
    url = await http_server(moderation_app("ok", []))
    dead = url.rsplit(":", 1)[0] + ":9/v1"  # discard port: nothing listens on loopback
    session, rec, output, llm, _ = make(settings=SafetySettings(endpoint_url=dead,
                                                                endpoint_timeout_s=0.3))
    try:
        session.submit_text("How many legs does a spider have?")
        await rec.wait_for("response.audio.done", 5)
        assert len(llm.requests) == 1 and output.seconds > 0
    finally:
        await session.close()
        await close_guards(session)
