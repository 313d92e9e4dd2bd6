"""Every caller's language, with the real models: Chinese, German, French and Spanish speech
(espeak-ng, synthetic: the only offline non-English speech here) into the multilingual
recognizer, language detection, a call that follows the caller's language, espeak-ng voices,
and real calls end to end (aiortc synthetic caller -> server -> spoken reply)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.asr.router import LanguageRouter
from callbot.pipeline.asr.whisper import FasterWhisperRecognizer
from callbot.pipeline.engines import Engines
from callbot.pipeline.lang import CallLanguage, LanguageFollowingRecognizer
from callbot.pipeline.safety.wordlists import DEFAULT_REFUSALS
from callbot.pipeline.text import character_errors, has_cjk
from callbot.pipeline.tts.espeak import EspeakSynthesizer
from callbot.pipeline.tts.kokoro import kokoro_available
from callbot.rtc.resample import resample_pcm
from callbot.signalling.config import CallbotConfig, Limits
from support import speech
from tests.conftest import TEST_CONFIG, ServerFactory
from tests.test_call_e2e import speak

LANGUAGES = ("en", "zh", "de", "fr", "es")
# Sentences base detects reliably when espeak-ng says them at 120 words/min (measured; the
# synthetic voices, Mandarin above all, are far from natural speech).
SAMPLES = {
    "zh": ("我想知道现在几点了。", "cmn-latn-pinyin"),
    "de": ("Ich möchte gerne wissen, wie spät es jetzt ist.", "de"),
    "fr": ("Je voudrais savoir quelle heure il est maintenant.", "fr"),
    "es": ("Quiero saber qué hora es ahora.", "es"),
    "en": ("Hello, what is the weather like today in London?", "en-us"),
}
# The served calls here use the default language list (all five; tests/conftest.py narrows
# the rest of the suite to English).
CONFIG = TEST_CONFIG.replace(
    languages=CallbotConfig().languages,
    limits=Limits(max_calls_per_client=100, call_rate_per_minute=100_000))


def clip(language: str, rate: int = 16_000) -> speech.Clip:
    text, voice = SAMPLES[language]
    return speech.espeak(text, rate, voice=voice, words_per_minute=120).padded(0.3, 0.3)


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


@pytest.fixture(scope="module")
def base_model() -> FasterWhisperRecognizer:
    return FasterWhisperRecognizer("base")


@pytest.fixture(scope="module")
def router(engines: Engines, base_model: FasterWhisperRecognizer) -> LanguageRouter:
    """tiny.en (the shared test engine) for English, base for the rest."""
    return LanguageRouter(engines.asr, base_model, among=LANGUAGES)


async def test_chinese_and_german_speech_transcribed_in_their_language(
        router: LanguageRouter) -> None:
    zh = await router.transcribe(clip("zh").pcm, language="zh")
    errors, length = character_errors(SAMPLES["zh"][0], zh.text)
    print(f"\nzh: {zh.text!r} (CER {errors / length:.0%})")
    assert has_cjk(zh.text) and zh.language == "zh"
    assert "我想知道" in zh.text  # the start of the sentence is recognised exactly
    de = await router.transcribe(clip("de").pcm, language="de")
    print(f"de: {de.text!r}")
    speech.assert_heard(de.text, SAMPLES["de"][0])


@pytest.mark.parametrize("language", LANGUAGES)
async def test_language_detection(router: LanguageRouter, language: str) -> None:
    result = await router.transcribe(clip(language).pcm)
    print(f"\n{language}: detected {result.language} p={result.language_probability:.2f} "
          f"{result.text!r}")
    assert result.language == language
    assert result.text.strip()


async def test_english_calls_stay_on_the_english_model(router: LanguageRouter,
                                                       engines: Engines) -> None:
    result = await router.transcribe(clip("en").pcm, language="en")
    assert result.language_probability is None  # tiny.en: nothing detected
    speech.assert_heard(result.text, SAMPLES["en"][0])


async def test_a_call_keeps_its_detected_language_and_follows_a_clear_switch(
        router: LanguageRouter) -> None:
    state = CallLanguage(allowed=LANGUAGES)
    asr = LanguageFollowingRecognizer(router, state)
    first = await asr.transcribe(clip("de").pcm)
    assert state.current == "de"
    speech.assert_heard(first.text, SAMPLES["de"][0])
    again = await asr.transcribe(clip("de").pcm)
    assert state.current == "de" and again.text == first.text  # kept (and not re-detected)
    switched = await asr.transcribe(clip("zh").pcm)
    assert state.current == "zh", switched
    assert has_cjk(switched.text)
    assert state.switches == ["de", "zh"]
    fixed = CallLanguage(allowed=LANGUAGES, fixed="de")
    result = await LanguageFollowingRecognizer(router, fixed).transcribe(clip("es").pcm)
    assert fixed.current == "de" and fixed.switches == [], result  # fixed: never switches


@pytest.mark.parametrize(("voice", "language", "text", "expect"), [
    ("espeak-de", "de", "Ich möchte gerne wissen, wie spät es jetzt ist.",
     {"ich", "möchte", "wissen"}),
    ("espeak-cmn", "zh", "我想知道现在几点了。", {"我想知道"}),
])
async def test_espeak_voices_speak_the_language(router: LanguageRouter, voice: str,
                                                language: str, text: str,
                                                expect: set[str]) -> None:
    audio = await EspeakSynthesizer(words_per_minute=130).synthesize(text, voice=voice)
    assert audio.seconds > 0.8
    pcm = resample_pcm(audio.pcm, audio.sample_rate, 16_000)
    heard = await router.transcribe(pcm, language=language)
    print(f"\n{voice}: {text!r} -> {heard.text!r}")
    if language == "zh":
        assert has_cjk(heard.text), heard.text
    # Letters rather than one exact word: for Chinese the sentence is one "word".
    speech.assert_heard(heard.text, text, min_ratio=0.5, min_words=0.5)


# ---- end to end: real calls --------------------------------------------------------------------


@pytest.fixture(scope="module")
async def multilingual_server(start_server: ServerFactory, engines: Engines,
                              router: LanguageRouter) -> str:
    return await start_server(CONFIG, app_engines=Engines(
        asr=router, llm=engines.llm, tts=engines.tts))


@pytest.fixture
async def caller_factory() -> AsyncIterator[Callable[..., Any]]:
    callers: list[SyntheticCaller] = []

    async def make(base: str, **kwargs: Any) -> SyntheticCaller:
        caller = SyntheticCaller(base, **kwargs)
        callers.append(caller)
        await caller.connect()
        return caller

    yield make
    for caller in callers:
        await caller.hangup()


async def test_healthz_lists_languages_and_voices(multilingual_server: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(
            f"{multilingual_server}/healthz") as resp:
        body = await resp.json()
    assert body["languages"] == list(LANGUAGES)
    # Kokoro's natural voices for zh/fr/es when installed (extra 'voices'), else espeak-ng;
    # German is always espeak-ng (no Kokoro voice).
    natural = kokoro_available() is None
    assert body["language_voices"] == {
        "en": "en_US-joe-medium", "de": "espeak-de",
        **({"zh": "kokoro-zf_xiaoxiao", "fr": "kokoro-ff_siwis", "es": "kokoro-ef_dora"}
           if natural else {"zh": "espeak-cmn", "fr": "espeak-fr", "es": "espeak-es"})}
    assert {"en_US-joe-medium", "espeak-cmn", "espeak-de"} <= set(body["voices"])
    assert body["safety"] is True


async def spoken_turn(caller: SyntheticCaller, language: str) -> tuple[dict[str, Any], str,
                                                                         float]:
    """Say the language's sample; returns transcript.final, the reply text, voice-to-voice."""
    start = len(caller.events)
    said = asyncio.ensure_future(speak(caller, clip(language, 48_000)))
    await caller.wait_event("response.audio.done", timeout=60, after=start)
    _, speech_end, _ = await said
    events = [data for _, data in caller.events[start:]]
    final = next(e for e in events if e["type"] == "transcript.final")
    reply = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    t_voice = caller.heard.first_voice_after(speech_end)
    assert t_voice is not None, "heard nothing from the bot"
    return final, reply, t_voice - speech_end


async def test_chinese_call_hears_a_spoken_reply(
        multilingual_server: str, caller_factory: Callable[..., Any]) -> None:
    caller: SyntheticCaller = await caller_factory(multilingual_server,
                                                   options={"language": "zh"})
    final, reply, v2v = await spoken_turn(caller, "zh")
    print(f"\nzh call: heard {final['text']!r}, replied {reply!r}, voice-to-voice "
          f"{v2v * 1000:.0f} ms")
    assert has_cjk(final["text"]), final
    # Over Opus any one character may be misheard: most of the sentence must come through.
    speech.assert_heard(final["text"], SAMPLES["zh"][0], min_ratio=0.5, min_words=0.0)
    assert reply.strip()
    await asyncio.sleep(0.5)
    assert len(caller.heard.audio_between(caller.heard.times[0], caller.heard.times[-1])
               ) / 16_000 > 0.5


async def test_german_call_is_detected_and_answered(
        multilingual_server: str, caller_factory: Callable[..., Any]) -> None:
    caller: SyntheticCaller = await caller_factory(multilingual_server)  # no language: detect
    final, reply, v2v = await spoken_turn(caller, "de")
    print(f"\nde call: heard {final['text']!r}, replied {reply!r}, voice-to-voice "
          f"{v2v * 1000:.0f} ms")
    speech.assert_heard(final["text"], SAMPLES["de"][0])
    async with aiohttp.ClientSession() as http, http.get(
            f"{multilingual_server}/v1/calls") as resp:
        calls = (await resp.json())["calls"]
    assert next(c for c in calls if c["call_id"] == caller.call_id)["language"] == "de"
    # An abusive (typed) German turn in the same call: a calm German reply, spoken, and
    # the event the operator sees.
    start = len(caller.events)
    caller.send({"type": "input.text", "text": "Halt die Fresse, du Idiot!"})
    flagged = await caller.wait_event("safety.flagged", timeout=10, after=start)
    assert flagged == {**flagged, "source": "caller", "action": "refused"}
    assert "harassment" in flagged["categories"]
    await caller.wait_event("response.audio.done", timeout=30, after=start)
    events = [data for _, data in caller.events[start:]]
    reply = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert reply == DEFAULT_REFUSALS["de"]
    t_started = caller.event_time("response.audio.started", after=0)
    assert t_started is not None
    assert caller.heard.first_voice_after(t_started - 0.5) is not None
