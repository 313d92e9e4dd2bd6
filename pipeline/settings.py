"""Settings of the speech pipeline (engines and turn-taking), with their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from .vad import SegmenterSettings

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant on a phone call. Answer in one or two short, plain "
    "sentences. No lists, no markdown, no emoji."
)


@dataclass(frozen=True)
class EngineSettings:
    asr_model: str = "tiny.en"  # or "base" (multilingual, extra 'multilingual')
    asr_threads: int = 2
    llm_backend: str = "local"  # "local" (embedded llama.cpp) or "openai"
    llm_threads: int = 2
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "default"
    openai_api_key: str | None = None
    tts_voice: str | None = None  # default: the first installed Piper voice
    tts_length_scale: float | None = None


@dataclass(frozen=True)
class TurnSettings:
    vad_aggressiveness: int = 2
    segmenter: SegmenterSettings = field(default_factory=SegmenterSettings)
    # Silence after speech that ends the turn, by how finished the transcript sounds.
    question_end_ms: int = 300
    statement_end_ms: int = 550
    incomplete_end_ms: int = 1200
    partial_interval_ms: int = 700  # re-decode the growing segment this often while speaking
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = 60
    temperature: float = 0.2
    max_history_messages: int = 16
    llm_timeout_s: float = 20.0  # a reply (LLM + synthesis) not done by then: llm_timeout
