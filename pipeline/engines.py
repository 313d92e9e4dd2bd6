"""Build the model engines once per process; every call shares them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .asr.base import SpeechRecognizer
from .errors import SettingsError
from .llm.base import LanguageModel
from .settings import DEFAULT_SYSTEM_PROMPT, EngineSettings
from .tts.base import SpeechSynthesizer

log = logging.getLogger(__name__)


@dataclass
class Engines:
    asr: SpeechRecognizer
    llm: LanguageModel
    tts: SpeechSynthesizer

    async def close(self) -> None:
        self.asr.close()
        self.tts.close()
        await self.llm.close()


def build_llm(settings: EngineSettings) -> LanguageModel:
    if settings.llm_backend == "openai":
        from .llm.openai_compat import OpenAICompatibleModel

        return OpenAICompatibleModel(
            settings.openai_base_url, settings.openai_model, api_key=settings.openai_api_key
        )
    if settings.llm_backend == "local":
        from .llm.llama_local import LlamaCppModel

        if settings.llm_model == "qwen2.5-1.5b":
            from .llm.quality import qwen_gguf_path

            # Bigger model, slow prompt evaluation: keep states of earlier prompts (system
            # prompt, each call's history) so a turn pays only for its new tokens.
            return LlamaCppModel(qwen_gguf_path(), n_ctx=4096, n_threads=settings.llm_threads,
                                 state_cache_bytes=768 * 1024 * 1024)
        return LlamaCppModel(n_threads=settings.llm_threads)
    raise SettingsError(f"unknown llm_backend {settings.llm_backend!r}: use 'local' or 'openai'")


def load_engines(settings: EngineSettings, *, warm_up_prompt: str | None = None) -> Engines:
    """Blocking (seconds): call it from a thread, once, at start-up.

    Each model then runs once, so the first caller does not pay for cold caches (the first
    llama.cpp completion took seconds; with the system prompt evaluated here, its tokens are
    already in the prompt cache when a call starts).
    """
    from .asr.whisper import FasterWhisperRecognizer
    from .tts.piper import PiperSynthesizer

    asr = FasterWhisperRecognizer(settings.asr_model, cpu_threads=settings.asr_threads)
    llm = build_llm(settings)
    tts = PiperSynthesizer(
        default_voice=settings.tts_voice, length_scale=settings.tts_length_scale
    )
    log.info("engines loaded: asr=%s llm=%s tts=%s", settings.asr_model, llm.name, tts.voices)
    asr.warm_up()
    llm.warm_up(warm_up_prompt or DEFAULT_SYSTEM_PROMPT)
    tts.warm_up()
    return Engines(asr=asr, llm=llm, tts=tts)
