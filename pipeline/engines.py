"""Build the model engines once per process; every call shares them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .asr.base import SpeechRecognizer
from .errors import SettingsError
from .llm.base import LanguageModel
from .settings import DEFAULT_SYSTEM_PROMPT, EngineSettings
from .tts.base import SpeechSynthesizer
from .turn_policy import TurnModel

if TYPE_CHECKING:
    from .smart_turn import SmartTurnModel

if TYPE_CHECKING:
    from .remote_http import RemoteSettings

log = logging.getLogger(__name__)


@dataclass
class Engines:
    asr: SpeechRecognizer
    llm: LanguageModel
    tts: SpeechSynthesizer
    turn_model: TurnModel | None = None  # audio end-of-turn model, for the smart_turn policy

    async def close(self) -> None:
        self.asr.close()
        self.tts.close()
        if self.turn_model is not None:
            self.turn_model.close()
        await self.llm.close()


def build_llm(settings: EngineSettings) -> LanguageModel:
    if settings.llm_backend == "openai":
        from .llm.openai_compat import OpenAICompatibleModel

        return OpenAICompatibleModel(
            settings.openai_base_url, settings.openai_model, api_key=settings.openai_api_key
        )
    if settings.llm_backend == "local":
        from .llm.llama_local import LlamaCppModel
        from .llm.llama_process import LlamaProcessModel

        # Its own process by default: in the server's, the GIL slows every token (see
        # llm/llama_process.py); "thread" keeps it in this process.
        engine = LlamaProcessModel if settings.llm_isolation == "process" else LlamaCppModel
        if settings.llm_model == "qwen2.5-1.5b":
            from .llm.quality import qwen_gguf_path

            # Bigger model, slow prompt evaluation: keep at least 768 MB of earlier prompts'
            # states (system prompt, each call's history).
            return engine(qwen_gguf_path(), n_ctx=4096, n_threads=settings.llm_threads,
                          state_cache_bytes=max(768, settings.llm_state_cache_mb) << 20)
        return engine(n_threads=settings.llm_threads,
                      state_cache_bytes=settings.llm_state_cache_mb << 20)
    raise SettingsError(f"unknown llm_backend {settings.llm_backend!r}: use 'local' or 'openai'")


def _remote(settings: EngineSettings, url: str) -> RemoteSettings:
    from .remote_http import RemoteSettings  # aiohttp's client only when a model is remote

    return RemoteSettings(base_url=url, timeout_s=settings.remote_timeout_s,
                          retries=settings.remote_retries)


def build_asr(settings: EngineSettings) -> SpeechRecognizer:
    if settings.asr_url:
        from .asr.remote import RemoteRecognizer

        return RemoteRecognizer(_remote(settings, settings.asr_url), settings.asr_model,
                                languages=("en",) if settings.asr_model.endswith(".en")
                                else None)
    return build_local_asr(settings)


def build_tts(settings: EngineSettings) -> SpeechSynthesizer:
    if settings.tts_url:
        from .tts.remote import RemoteSynthesizer

        voices = (settings.tts_voice,) if settings.tts_voice else ()
        return RemoteSynthesizer(_remote(settings, settings.tts_url), voices=voices,
                                 default_voice=settings.tts_voice)
    from .tts.piper import PiperSynthesizer

    return PiperSynthesizer(default_voice=settings.tts_voice,
                            length_scale=settings.tts_length_scale)


def build_local_asr(settings: EngineSettings) -> SpeechRecognizer:
    """tiny.en alone, or a `LanguageRouter` (base alone, or tiny.en + base on one worker
    thread, so a call's English turns and another call's Chinese turns queue fairly)."""
    from .asr.router import LanguageRouter
    from .asr.whisper import FasterWhisperRecognizer
    from .worker import ModelWorker

    threads = settings.asr_threads
    if settings.asr_model == "tiny.en":
        return FasterWhisperRecognizer("tiny.en", cpu_threads=threads)
    if settings.asr_model == "base":
        return LanguageRouter(None, FasterWhisperRecognizer("base", cpu_threads=threads))
    worker = ModelWorker("asr")
    return LanguageRouter(
        FasterWhisperRecognizer("tiny.en", cpu_threads=threads, worker=worker),
        FasterWhisperRecognizer("base", cpu_threads=threads, worker=worker),
    )


def load_engines(settings: EngineSettings, *, warm_up_prompt: str | None = None) -> Engines:
    """Blocking (seconds): call it from a thread, once, at start-up.

    Each model then runs once, so the first caller does not pay for cold caches (the first
    llama.cpp completion took seconds; with the system prompt evaluated here, its tokens are
    already in the prompt cache when a call starts).
    """
    asr = build_asr(settings)
    llm = build_llm(settings)
    tts = build_tts(settings)
    turn_model = load_turn_model(settings)
    log.info("engines loaded: asr=%s llm=%s tts=%s turn=%s", settings.asr_model, llm.name,
             tts.voices, turn_model.name if turn_model else None)
    asr.warm_up()
    llm.warm_up(warm_up_prompt or DEFAULT_SYSTEM_PROMPT)
    tts.warm_up()
    if turn_model is not None:
        turn_model.warm_up()
    return Engines(asr=asr, llm=llm, tts=tts, turn_model=turn_model)


def load_turn_model(settings: EngineSettings) -> SmartTurnModel | None:
    """The Smart Turn model: "auto" loads it when installed, "none" never."""
    from .smart_turn import SmartTurnModel, smart_turn_available

    if settings.turn_model == "none":
        return None
    if settings.turn_model == "auto" and not smart_turn_available():
        log.info("Smart Turn model not installed (extra 'turn-model'): transcript rule only")
        return None
    return SmartTurnModel()
