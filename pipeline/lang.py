"""A call's language: fixed by the caller (`options.language`) or detected from the first turn
and kept, switching only when the caller clearly switches; the ASR and TTS of the call follow
it, and the LLM is told to answer in it.

The models are shared by every call; what is per call is a thin wrapper around them
(`call_engines`), holding the call's `CallLanguage`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .asr.base import SpeechRecognizer, Transcript
from .engines import Engines
from .errors import SettingsError
from .text import has_cjk
from .tts.base import SpeechSynthesizer, SynthesizedAudio
from .tts.kokoro import DEFAULT_KOKORO_VOICES

log = logging.getLogger(__name__)

# The languages callbot has text rules, word lists, refusals and default voices for.
SUPPORTED_LANGUAGES = ("en", "zh", "de", "fr", "es")
LANGUAGE_NAMES = {
    "en": ("English", "English"), "zh": ("Chinese (Mandarin)", "中文"),
    "de": ("German", "Deutsch"), "fr": ("French", "français"), "es": ("Spanish", "español"),
}
DEFAULT_VOICES = {  # the robotic fallback voices (espeak-ng), always installable from Debian
    "zh": "espeak-cmn", "de": "espeak-de", "fr": "espeak-fr", "es": "espeak-es",
}
# Kokoro-82M's voice per language, used when installed (pipeline/tts/kokoro.py; no German).
KOKORO_VOICES = {lang: voice for lang, voice in DEFAULT_KOKORO_VOICES.items()
                 if lang in SUPPORTED_LANGUAGES and lang != "en"}  # English keeps Piper
# A transcript less sure than this (mean token log-probability) may be another language:
# tiny.en gives English speech about -0.2 and foreign speech -0.9 to -1.6 (measured).
SWITCH_CONFIDENCE = -0.75
SWITCH_PROBABILITY = 0.5  # the new language must be at least this likely


def language_instruction(language: str | None) -> str | None:
    """The system note that makes the LLM answer in the caller's language."""
    if language is None or language == "en":
        return None
    english, native = LANGUAGE_NAMES.get(language, (language, language))
    # Short, and appended to the system prompt (see VoiceSession._messages): every prompt
    # token costs time on a small CPU model, and a fixed prefix stays in its prompt cache.
    return f"Always answer in {english} ({native})."


@dataclass
class CallLanguage:
    """The language of one call. `fixed`: chosen by the caller, never changes."""

    allowed: tuple[str, ...]
    fixed: str | None = None
    current: str | None = None
    switches: list[str] = field(default_factory=list)  # every language it switched to

    def __post_init__(self) -> None:
        if self.fixed is not None:
            self.current = self.fixed
        elif len(self.allowed) == 1:
            self.current = self.allowed[0]  # nothing to detect

    @property
    def detecting(self) -> bool:
        return self.fixed is None and len(self.allowed) > 1

    def adopt(self, language: str) -> None:
        if language != self.current:
            log.info("call language: %s -> %s", self.current, language)
            self.current = language
            self.switches.append(language)


class LanguageFollowingRecognizer:
    """A call's view of the shared recognizer: passes the call's language, detects it on the
    first turn, and re-detects when a transcript looks like another language was spoken."""

    def __init__(self, inner: SpeechRecognizer, language: CallLanguage) -> None:
        self.inner = inner
        self.language = language
        self.name = inner.name
        self.languages = inner.languages

    @property
    def busy(self) -> bool:
        return self.inner.busy

    def warm_up(self) -> None:  # the shared engine is warmed once, not per call
        pass

    def close(self) -> None:  # the shared engine outlives the call
        pass

    async def transcribe(
        self, pcm: np.ndarray, *, language: str | None = None, partial: bool = False,
        prompt: str | None = None,
    ) -> Transcript:
        state = self.language
        current = state.current
        result = await self.inner.transcribe(pcm, language=current, partial=partial,
                                             prompt=prompt)
        if partial or not state.detecting or not result.text.strip() and current is not None:
            return result
        if current is None:
            if result.language in state.allowed and result.text.strip():
                state.adopt(result.language)
            return result
        if not self._looks_like_another_language(result, current):
            return result
        detected = await self.inner.transcribe(pcm, language=None)
        if (detected.language in state.allowed and detected.language != current
                and (detected.language_probability or 0.0) >= SWITCH_PROBABILITY
                and detected.text.strip()):
            state.adopt(detected.language)
            return detected
        return result

    @staticmethod
    def _looks_like_another_language(result: Transcript, current: str) -> bool:
        text = result.text.strip()
        if current == "zh" and text and not has_cjk(text):
            return True
        if current != "zh" and has_cjk(text):
            return True
        return result.confidence is not None and result.confidence < SWITCH_CONFIDENCE


class LanguageFollowingSynthesizer:
    """A call's view of the shared synthesizer: the voice of the call's language, unless the
    caller chose a voice."""

    def __init__(self, inner: SpeechSynthesizer, language: CallLanguage,
                 voices_by_language: Mapping[str, str], fixed_voice: str | None = None) -> None:
        self.inner = inner
        self.language = language
        self.voices_by_language = dict(voices_by_language)
        self.fixed_voice = fixed_voice
        self.voices = inner.voices

    def voice(self) -> str | None:
        if self.fixed_voice is not None:
            return self.fixed_voice
        wanted = self.voices_by_language.get(self.language.current or "en")
        return wanted if wanted in self.inner.voices else None

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        return await self.inner.synthesize(text, voice=voice or self.voice())


def call_engines(engines: Engines, *, allowed: tuple[str, ...], language: str | None = None,
                 voice: str | None = None, voices_by_language: Mapping[str, str] | None = None,
                 ) -> tuple[Engines, CallLanguage]:
    """The per-call engines: the shared models behind the call's language."""
    if language is not None and language not in allowed:
        raise SettingsError(f"language {language!r} is not one of {list(allowed)}")
    state = CallLanguage(allowed=allowed, fixed=language)
    voices = dict(voices_by_language or {})
    return dataclasses.replace(
        engines,
        asr=LanguageFollowingRecognizer(engines.asr, state),
        tts=LanguageFollowingSynthesizer(engines.tts, state, voices, voice),
    ), state


@dataclass(frozen=True)
class VoiceSettings:
    """Speech out per language (the `[tts]` table of the config)."""

    # language -> voice name; unset languages: the Piper voice for English, the first server
    # voice when a speech server is set, else Kokoro's (zh, fr, es) when installed, else
    # espeak-ng's (DEFAULT_VOICES; German always).
    by_language: dict[str, str] = field(default_factory=dict)
    espeak: bool = True  # offer the espeak-ng voices (offline; apt-get install espeak-ng)
    # Kokoro-82M natural voices (zh, es, fr, it, pt, hi) when installed (extra 'voices' +
    # `callbot voices add kokoro-js-1.2.1.tgz`); they then speak those languages by default.
    # No German Kokoro voice exists: German stays on espeak-ng.
    kokoro: bool = True
    kokoro_voices_dir: str | None = None  # default: $CALLBOT_CACHE_DIR/kokoro-voices
    kokoro_speed: float = 1.0  # 0.5-2.0
    espeak_words_per_minute: int = 145  # slower is clearer
    server_url: str | None = None  # an OpenAI-compatible base URL with /audio/speech
    server_model: str = "tts-1"
    server_api_key: str | None = None
    server_voices: tuple[str, ...] = ()  # the server's voice names; offered as "openai-NAME"
    server_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.server_url and not self.server_voices:
            raise SettingsError("server_voices: list the speech server's voices to use")
        if self.espeak_words_per_minute < 80 or self.server_timeout_s <= 0:
            raise SettingsError("espeak_words_per_minute / server_timeout_s: out of range")
        if not 0.5 <= self.kokoro_speed <= 2.0:
            raise SettingsError("kokoro_speed: between 0.5 and 2.0")


def build_voices(base: SpeechSynthesizer, settings: VoiceSettings) -> SpeechSynthesizer:
    """The shared synthesizer with the other languages' voices beside the Piper voice(s).

    Blocking (Kokoro loads and warms up once per process, seconds): call it from a thread.
    """
    from .tts.router import VoiceRouter

    engines: list[SpeechSynthesizer] = [base]
    kokoro = load_kokoro(settings)
    if kokoro is not None:
        engines.append(kokoro)
    if settings.server_url:
        from .tts.openai_speech import OpenAISpeechSynthesizer

        engines.append(OpenAISpeechSynthesizer(
            settings.server_url, {f"openai-{v}": v for v in settings.server_voices},
            model=settings.server_model, api_key=settings.server_api_key,
            timeout_s=settings.server_timeout_s,
        ))
    if settings.espeak:
        from .tts.espeak import EspeakSynthesizer

        try:
            engines.append(EspeakSynthesizer(words_per_minute=settings.espeak_words_per_minute))
        except RuntimeError as exc:
            log.warning("no espeak-ng voices: %s", exc)
    return engines[0] if len(engines) == 1 else VoiceRouter(engines)


def load_kokoro(settings: VoiceSettings) -> SpeechSynthesizer | None:
    """The process's Kokoro voices, or None (with the reason logged) when not installed."""
    if not settings.kokoro:
        return None
    from pathlib import Path

    from .tts import kokoro

    folder = Path(settings.kokoro_voices_dir).expanduser() if settings.kokoro_voices_dir else None
    missing = kokoro.kokoro_available(folder)
    if missing is not None:
        log.info("no Kokoro voices (zh/es/fr stay on espeak-ng): %s", missing)
        return None
    try:
        return kokoro.shared_kokoro(folder, settings.kokoro_speed)
    except (kokoro.KokoroMissing, OSError, ImportError) as exc:
        log.warning("Kokoro voices failed to load (zh/es/fr stay on espeak-ng): %s", exc)
        return None


def voices_by_language(languages: tuple[str, ...], voices: tuple[str, ...],
                       settings: VoiceSettings, english_voice: str | None = None
                       ) -> dict[str, str]:
    """Which voice speaks each allowed language (what /healthz shows)."""
    out: dict[str, str] = {}
    server = [f"openai-{v}" for v in settings.server_voices]
    for language in languages:
        wanted = settings.by_language.get(language)
        if wanted is None:
            if language == "en":
                wanted = english_voice or (voices[0] if voices else None)
            elif server:
                wanted = server[0]
            elif KOKORO_VOICES.get(language) in voices:
                wanted = KOKORO_VOICES[language]  # natural where Kokoro speaks it
            else:
                wanted = DEFAULT_VOICES.get(language)
        if wanted is not None and wanted not in voices:
            raise SettingsError(f"tts.by_language.{language}: no voice {wanted!r} "
                                f"(available: {', '.join(voices)})")
        if wanted is not None:
            out[language] = wanted
    return out
