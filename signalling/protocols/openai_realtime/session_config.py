"""The Realtime session object (`session.update`, `session.created/updated`) and how its
fields map onto callbot's settings.

Turn detection: `server_vad` is callbot's own turn-taking (speculation at a short pause, a
reply only once the end-of-turn policy confirms the turn); its fields map onto the endpointing
settings: `threshold` -> webrtcvad aggressiveness (x 4, 0..3), `prefix_padding_ms` -> the
segmenter's pre-roll, `silence_duration_ms` -> the silence that ends a statement (a question
may end sooner, an unfinished sentence waits longer). `semantic_vad` is the same turn-taking
(callbot's end of turn already reads the words), with `eagerness` scaling the silences.
`null` is push-to-talk: the client commits the input buffer and asks for the response.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from callbot.pipeline.settings import TurnSettings
from callbot.signalling.protocols.openai_realtime.audio import RATES

# The reference API's stock voices; callbot answers with its own (default) voice for them.
STOCK_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse",
                "marin", "cedar")
EAGERNESS = {"low": 1.5, "medium": 1.0, "auto": 1.0, "high": 0.7}
MODALITIES = (["audio"], ["text"])


class SessionError(ValueError):
    """A `session.update` (or client secret's session) that cannot be applied; `param` names
    the field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class RealtimeSessionConfig:
    instructions: str
    voice: str
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    input_rate: int = 24_000
    output_rate: int = 24_000
    turn_detection: dict[str, Any] | None = None  # None: push-to-talk
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, str] = "auto"  # or {"type": "function", "name": ...}
    max_output_tokens: int | str = "inf"
    model: str = "callbot"

    @property
    def push_to_talk(self) -> bool:
        return self.turn_detection is None

    @property
    def audio_out(self) -> bool:
        return self.output_modalities == ["audio"]

    def to_wire(self, session_id: str, transcription_model: str) -> dict[str, Any]:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "tools": copy.deepcopy(self.tools),
            "tool_choice": copy.deepcopy(self.tool_choice),
            "max_output_tokens": self.max_output_tokens,
            "tracing": None,
            "prompt": None,
            "truncation": "auto",
            "include": None,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.input_rate},
                    "transcription": {"model": transcription_model},
                    "noise_reduction": None,
                    "turn_detection": copy.deepcopy(self.turn_detection),
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": self.output_rate},
                    "voice": self.voice,
                    "speed": 1.0,
                },
            },
        }


def default_turn_detection(settings: TurnSettings) -> dict[str, Any]:
    e = settings.endpointing
    return {
        "type": "server_vad",
        "threshold": e.vad_aggressiveness / 4,
        "prefix_padding_ms": e.segmenter.preroll_ms,
        "silence_duration_ms": e.statement_end_ms,
        "create_response": True,
        "interrupt_response": settings.interruption.enabled,
        "idle_timeout_ms": None,
    }


def turn_settings(base: TurnSettings, detection: dict[str, Any] | None,
                  max_output_tokens: int | str) -> TurnSettings:
    """callbot's turn settings for a session's `turn_detection` (None: push-to-talk keeps the
    base settings; the VAD is not used) and token cap."""
    settings = base
    if isinstance(max_output_tokens, int):
        settings = dataclasses.replace(
            settings, reply=dataclasses.replace(settings.reply, max_tokens=max_output_tokens))
    if detection is None:
        return settings
    e = base.endpointing
    if detection["type"] == "server_vad":
        silence = int(detection.get("silence_duration_ms") or e.statement_end_ms)
        endpointing = dataclasses.replace(
            e,
            vad_aggressiveness=min(3, int(float(detection.get("threshold", 0.5)) * 4)),
            segmenter=dataclasses.replace(
                e.segmenter, preroll_ms=int(detection.get("prefix_padding_ms",
                                                          e.segmenter.preroll_ms))),
            statement_end_ms=silence,
            question_end_ms=min(e.question_end_ms, silence),
            incomplete_end_ms=max(e.incomplete_end_ms, silence),
        )
    else:  # semantic_vad
        scale = EAGERNESS[str(detection.get("eagerness", "auto"))]
        endpointing = dataclasses.replace(
            e,
            question_end_ms=int(e.question_end_ms * scale),
            statement_end_ms=int(e.statement_end_ms * scale),
            incomplete_end_ms=int(e.incomplete_end_ms * scale),
        )
    interruption = dataclasses.replace(
        settings.interruption, enabled=bool(detection.get("interrupt_response", True)))
    return dataclasses.replace(settings, endpointing=endpointing, interruption=interruption)


def apply_update(config: RealtimeSessionConfig, update: Any, *, voices: tuple[str, ...],
                 base: TurnSettings, max_prompt_chars: int) -> RealtimeSessionConfig:
    """A new config with `update` (a `session` object) applied; SessionError if any field is
    wrong (then nothing is applied)."""
    if not isinstance(update, dict):
        raise SessionError("session", "'session' must be an object")
    new = copy.deepcopy(config)
    session_type = update.get("type", "realtime")
    if session_type != "realtime":
        raise SessionError("session.type", "only 'realtime' sessions are supported "
                           "(transcription sessions are not, yet)")
    if "instructions" in update and update["instructions"] is not None:
        text = update["instructions"]
        if not isinstance(text, str) or len(text) > max_prompt_chars:
            raise SessionError("session.instructions",
                               f"'instructions' must be a string of at most {max_prompt_chars} "
                               "characters")
        new.instructions = text
    if "model" in update and isinstance(update["model"], str):
        new.model = update["model"][:100]
    modalities = update.get("output_modalities")
    if modalities is not None:
        if modalities not in MODALITIES:
            raise SessionError("session.output_modalities",
                               "'output_modalities' must be [\"audio\"] or [\"text\"]")
        new.output_modalities = list(modalities)
    tokens = update.get("max_output_tokens")
    if tokens is not None:
        if not (tokens == "inf" or (isinstance(tokens, int) and not isinstance(tokens, bool)
                                    and 1 <= tokens <= 4096)):
            raise SessionError("session.max_output_tokens",
                               "'max_output_tokens' must be 1..4096 or \"inf\"")
        new.max_output_tokens = tokens
    if "tools" in update:
        new.tools = _tools(update["tools"])
    choice = update.get("tool_choice")
    if choice is not None:
        if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(
                choice.get("name"), str):
            new.tool_choice = {"type": "function", "name": choice["name"]}
        elif choice in ("auto", "none", "required"):
            new.tool_choice = choice
        else:
            raise SessionError("session.tool_choice", "'tool_choice' must be \"auto\", "
                               "\"none\", \"required\" or {\"type\": \"function\", \"name\"}")
    if isinstance(new.tool_choice, dict) and new.tool_choice["name"] not in {
            t["name"] for t in new.tools}:
        raise SessionError("session.tool_choice", "'tool_choice' names a tool the session "
                           "does not have")
    audio = update.get("audio")
    if audio is not None:
        if not isinstance(audio, dict):
            raise SessionError("session.audio", "'audio' must be an object")
        _apply_audio(new, audio, voices, base)
    return new


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > 64:
        raise SessionError("session.tools", "'tools' must be a list of at most 64 tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise SessionError(f"session.tools[{i}]",
                               "only function tools are supported (no MCP servers)")
        name = tool.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise SessionError(f"session.tools[{i}].name", "a tool needs a 'name'")
        description = tool.get("description", "")
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(description, str) or not isinstance(parameters, dict):
            raise SessionError(f"session.tools[{i}]",
                               "'description' must be a string and 'parameters' an object")
        tools.append({"type": "function", "name": name, "description": description,
                      "parameters": parameters})
    return tools


def _rate(fmt: Any, param: str) -> int:
    if not isinstance(fmt, dict):
        raise SessionError(param, "'format' must be an object")
    kind = fmt.get("type", "audio/pcm")
    if kind != "audio/pcm":
        raise SessionError(f"{param}.type", "only audio/pcm (16-bit PCM) is supported "
                           "(not yet G.711 audio/pcmu, audio/pcma)")
    rate = fmt.get("rate", 24_000)
    if rate not in RATES:
        raise SessionError(f"{param}.rate", f"'rate' must be one of {list(RATES)}")
    return int(rate)


def _apply_audio(new: RealtimeSessionConfig, audio: dict[str, Any],
                 voices: tuple[str, ...], base: TurnSettings) -> None:
    inp = audio.get("input")
    if inp is not None:
        if not isinstance(inp, dict):
            raise SessionError("session.audio.input", "'input' must be an object")
        if inp.get("format") is not None:
            new.input_rate = _rate(inp["format"], "session.audio.input.format")
        if "turn_detection" in inp:
            new.turn_detection = _turn_detection(inp["turn_detection"], base)
    out = audio.get("output")
    if out is not None:
        if not isinstance(out, dict):
            raise SessionError("session.audio.output", "'output' must be an object")
        if out.get("format") is not None:
            new.output_rate = _rate(out["format"], "session.audio.output.format")
        voice = out.get("voice")
        if voice is not None:
            if isinstance(voice, str) and voice in STOCK_VOICES:
                voice = voices[0]
            if voice not in voices:
                raise SessionError("session.audio.output.voice",
                                   f"'voice' must be one of {list(voices + STOCK_VOICES)}")
            new.voice = voice


def _turn_detection(raw: Any, base: TurnSettings) -> dict[str, Any] | None:
    if raw is None:
        return None
    param = "session.audio.input.turn_detection"
    if not isinstance(raw, dict):
        raise SessionError(param, "'turn_detection' must be an object or null")
    kind = raw.get("type", "server_vad")
    detection = default_turn_detection(base)
    if kind == "semantic_vad":
        eagerness = raw.get("eagerness", "auto")
        if eagerness not in EAGERNESS:
            raise SessionError(f"{param}.eagerness",
                               "'eagerness' must be low, medium, high or auto")
        detection = {"type": "semantic_vad", "eagerness": eagerness, "create_response": True,
                     "interrupt_response": detection["interrupt_response"]}
    elif kind != "server_vad":
        raise SessionError(f"{param}.type", "'type' must be server_vad or semantic_vad")
    for key, value in raw.items():
        if key in ("type", "eagerness") or value is None:
            continue
        if key == "threshold":
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise SessionError(f"{param}.threshold", "'threshold' must be 0..1")
        elif key in ("prefix_padding_ms", "silence_duration_ms"):
            if not isinstance(value, int) or not 0 < value <= 10_000:
                raise SessionError(f"{param}.{key}", f"'{key}' must be 1..10000 ms")
        elif key in ("create_response", "interrupt_response"):
            if not isinstance(value, bool):
                raise SessionError(f"{param}.{key}", f"'{key}' must be a boolean")
            if key == "create_response" and not value:
                raise SessionError(f"{param}.create_response",
                                   "create_response false is not supported yet: callbot "
                                   "answers each turn")
        else:
            continue  # idle_timeout_ms, model_version...: accepted, not acted on
        if kind == "server_vad" or key in ("create_response", "interrupt_response"):
            detection[key] = value
    return detection
