"""Settings of the speech pipeline (engines and turn-taking), with their defaults.

Every settings object checks itself when it is built (`SettingsError` names the field), so a
bad value fails where it is written, in Python as in a config file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SettingsError
from .vad import SegmenterSettings

# Short: every prompt token costs time on 2 cores. ("If you do not know, say so" scored 10/20
# against 9/20 in bench/quality.py, within noise, and made the 135M model ignore the knowledge
# base's passage in tests/test_knowledge_call.py, so it is not in the default.)
DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant on a phone call. Answer in one or two short, plain "
    "sentences. No lists, no markdown, no emoji."
)
ASR_MODELS = ("tiny.en", "base", "auto")
LLM_BACKENDS = ("local", "openai")
# Embedded models: the default, and the optional "quality" one (extra 'quality').
LOCAL_LLM_MODELS = ("smollm2-135m", "qwen2.5-1.5b")
TURN_MODELS = ("auto", "smart-turn-v3.2", "none")
END_OF_TURN_POLICIES = ("transcript", "smart_turn", "smart_turn_only")


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise SettingsError(f"{name}: must be greater than 0")


@dataclass(frozen=True)
class EngineSettings:
    # "tiny.en" (English only), "base" (multilingual) or "auto" (the default, both installed by
    # `pip install .`): tiny.en for English calls and base for every other language and for
    # detection, so the default server hears all five languages and English keeps its fast path.
    asr_model: str = "auto"
    asr_threads: int = 2
    llm_backend: str = "local"  # "local" (embedded llama.cpp) or "openai"
    llm_threads: int = 2
    # The embedded LLM: "process" (a child process of its own, out of the server's GIL) or
    # "thread" (in this process, on a worker thread).
    llm_isolation: str = "process"
    # The embedded model: Qwen2.5 1.5B answers plain questions right in all five languages
    # (20/20 in bench/quality); "smollm2-135m" is ~10x faster to its first token and right on
    # about half.
    llm_model: str = "qwen2.5-1.5b"
    # States of earlier prompts the embedded LLM keeps (each call's history so far), so with
    # several calls a turn evaluates only its new tokens. 0 = off (the quality model keeps at
    # least 768 MB whatever this says: its prompts are slow to evaluate). SmolLM2: ~23 KB a token.
    llm_state_cache_mb: int = 256
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "default"
    openai_api_key: str | None = None
    tts_voice: str | None = None  # default: the first installed Piper voice
    tts_length_scale: float | None = None
    # Models on an inference server (OpenAI-compatible audio endpoints), e.g.
    # "http://models:9000/v1"; None: the model runs in this process.
    asr_url: str | None = None  # POST {asr_url}/audio/transcriptions
    tts_url: str | None = None  # POST {tts_url}/audio/speech (streamed PCM)
    remote_timeout_s: float = 10.0  # one request to an inference server
    remote_retries: int = 2  # repeats of a request none of whose result was used
    # Audio end-of-turn model: "auto" (Smart Turn v3.2 when extra 'turn-model' is installed),
    # "smart-turn-v3.2" (required) or "none".
    turn_model: str = "auto"

    def __post_init__(self) -> None:
        if self.remote_timeout_s <= 0 or self.remote_retries < 0:
            raise SettingsError("remote_timeout_s must be > 0 and remote_retries >= 0")
        if self.turn_model not in TURN_MODELS:
            raise SettingsError(f"turn_model: expected one of {', '.join(TURN_MODELS)}")
        if self.asr_model not in ASR_MODELS:
            raise SettingsError("asr_model: expected 'tiny.en', 'base' or 'auto'")
        if self.llm_backend not in LLM_BACKENDS:
            raise SettingsError("llm_backend: expected 'local' or 'openai'")
        if self.llm_isolation not in ("process", "thread"):
            raise SettingsError("llm_isolation: expected 'process' or 'thread'")
        if self.llm_model not in LOCAL_LLM_MODELS:
            raise SettingsError("llm_model: expected 'smollm2-135m' or 'qwen2.5-1.5b'")
        _positive(self, "asr_threads", "llm_threads")
        if self.llm_state_cache_mb < 0:
            raise SettingsError("llm_state_cache_mb: must be 0 (off) or more")


@dataclass(frozen=True)
class EndpointingSettings:
    """When the caller's turn is over: VAD, speculation and the silence each kind of turn needs."""

    vad_aggressiveness: int = 2
    # Silero VAD confirms webrtcvad's speech: steady noise (hum, a fan) no longer keeps a turn
    # open (pipeline/vad.py SileroVad). False: webrtcvad alone.
    neural_vad: bool = True
    segmenter: SegmenterSettings = field(default_factory=SegmenterSettings)
    # Silence after speech that ends the turn, by how finished the transcript sounds
    # (the default end-of-turn policy, `pipeline.turn_policy.TranscriptRule`).
    question_end_ms: int = 300
    statement_end_ms: int = 550
    incomplete_end_ms: int = 1200
    partial_interval_ms: int = 700  # re-decode the growing segment this often while speaking
    # Which end-of-turn policy decides (pipeline.turn_policy): "transcript" (the rule above),
    # "smart_turn" (the rule and the Smart Turn audio model together; needs the model, else
    # the rule alone) or "smart_turn_only" (the audio model alone, as Pipecat uses it).
    policy: str = "smart_turn"
    turn_model_threshold: float = 0.5  # smart_turn_only: "finished" above this probability
    turn_model_statement_end_ms: int = 300  # smart_turn: a statement the model calls finished

    def __post_init__(self) -> None:
        if not 0 <= self.vad_aggressiveness <= 3:
            raise SettingsError("vad_aggressiveness: expected 0..3")
        if self.policy not in END_OF_TURN_POLICIES:
            raise SettingsError(f"policy: expected one of {', '.join(END_OF_TURN_POLICIES)}")
        if not 0 < self.turn_model_threshold < 1:
            raise SettingsError("turn_model_threshold: expected between 0 and 1")
        _positive(self, "turn_model_statement_end_ms")
        _positive(self, "question_end_ms", "statement_end_ms", "incomplete_end_ms",
                  "partial_interval_ms")


@dataclass(frozen=True)
class InterruptionSettings:
    """What the caller's voice does to a bot that is talking."""

    enabled: bool = True  # False: the bot finishes its reply whatever the caller says
    # The bot's voice pauses at a voice onset (40 ms of rising voice, see SegmenterSettings),
    # ~80 ms before the turn is sure to be speech, and goes on where it paused if no speech
    # follows within resume_after_ms; confirmed speech then stops the reply as before.
    pause_on_onset: bool = True
    resume_after_ms: int = 300
    # Speech over the bot keeps it paused (not stopped) until it is judged: a backchannel
    # ("mm-hmm", "yeah", a cough; pipeline/backchannel.py) lets it go on where it paused, a
    # real interruption stops it. Longer than backchannel_max_ms is a real interruption at once.
    backchannels: bool = True
    backchannel_max_ms: int = 1200

    def __post_init__(self) -> None:
        _positive(self, "resume_after_ms", "backchannel_max_ms")


@dataclass(frozen=True)
class ReplySettings:
    """How the bot answers: prompt, length, history, time limit."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = 60
    temperature: float = 0.2
    max_history_messages: int = 16
    max_context_chars: int = 4000  # notes added by the app (`CallHandle.add_context`)
    timeout_s: float = 30.0  # a reply (LLM + synthesis) not done by then: llm_timeout
    # No first token this long after the reply started (at the caller's pause): once the turn is
    # confirmed, say a short holding phrase in the call's language (pipeline/holding.py), so the
    # caller hears the bot at once while a slow model thinks; 0: never. Unset: 0.6 s with the
    # embedded 1.5B model, 3 s otherwise (`hold_after_for`). A timed-out reply always ends with
    # a spoken apology.
    hold_after_s: float | None = None
    # The model's context window: prompt + notes + history + passages + the turn + the reply
    # are trimmed to fit it (oldest history first). 2048: the embedded SmolLM2's n_ctx.
    context_window_tokens: int = 2048
    bytes_per_token: float = 2.5  # the estimate used to fit (conservative for English)

    def __post_init__(self) -> None:
        _positive(self, "max_tokens", "max_history_messages", "max_context_chars", "timeout_s",
                  "context_window_tokens", "bytes_per_token")
        if self.max_tokens + 128 > self.context_window_tokens:
            raise SettingsError("max_tokens: must leave room in context_window_tokens")
        if not 0 <= self.temperature <= 2:
            raise SettingsError("temperature: expected 0..2")
        if self.hold_after_s is not None and self.hold_after_s < 0:
            raise SettingsError("hold_after_s: expected >= 0")


SLOW_FIRST_TOKEN_MODELS = ("qwen2.5-1.5b",)  # ~1 s to a first token on 2 cores


def hold_after_for(engines: EngineSettings) -> float:
    """When to say the holding phrase if `hold_after_s` is unset: at once (once the turn is
    confirmed) for a model that is slow to its first token, otherwise only for a stall."""
    slow = engines.llm_backend == "local" and engines.llm_model in SLOW_FIRST_TOKEN_MODELS
    return 0.6 if slow else 3.0


@dataclass(frozen=True)
class EchoSettings:
    """Server-side echo cancellation (pipeline/echo.py, WebRTC AEC3): the bot's own voice
    coming back through a caller's speakerphone is taken out before VAD and ASR."""

    enabled: bool = True  # WebRTC calls (the paced track gives the far-end reference)
    # AEC3's output only where the bot's voice is found coming back (pipeline/echo.py EchoPath);
    # a clean caller's audio passes untouched, so a barge-in is not held back by AEC3's
    # suppressor (~1 s with `adaptive = false`). false: AEC3's output always.
    adaptive: bool = True
    stream_delay_ms: int = 0  # a hint only; AEC3 estimates the echo path's delay itself


@dataclass(frozen=True)
class TurnSettings:
    endpointing: EndpointingSettings = field(default_factory=EndpointingSettings)
    interruption: InterruptionSettings = field(default_factory=InterruptionSettings)
    reply: ReplySettings = field(default_factory=ReplySettings)
    echo: EchoSettings = field(default_factory=EchoSettings)
