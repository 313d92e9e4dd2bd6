"""The one vocabulary of call events: every event the server can send, and every message a
client may send, defined once with its fields.

The session and the call emit these objects; `to_wire()` is the only place an event becomes
JSON. The README table, the JSON schema in `/v1/openapi.json` and the demo page are checked
against `SERVER_EVENTS` by `tests/test_events.py`, so a new event cannot ship undocumented.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

BotStateName = Literal["listening", "thinking", "speaking"]


@dataclass(frozen=True)
class Event:
    """Base of every server -> client event. `type` is the name on the wire."""

    type: ClassVar[str]

    def fields(self) -> dict[str, Any]:
        """The event's fields as JSON-able values; optional fields left unset are omitted."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_wire(self, t_ms: float) -> dict[str, Any]:
        return {"type": self.type, "t_ms": round(t_ms, 1), **self.fields()}


@dataclass(frozen=True)
class SpeechStarted(Event):
    """The caller started talking (VAD)."""

    type: ClassVar[str] = "vad.speech_started"


@dataclass(frozen=True)
class SpeechStopped(Event):
    """The caller's turn is over (the end-of-turn policy confirmed the silence)."""

    type: ClassVar[str] = "vad.speech_stopped"


@dataclass(frozen=True)
class TranscriptPartial(Event):
    """What the caller has said so far in this turn (a preview; may change)."""

    type: ClassVar[str] = "transcript.partial"
    text: str


@dataclass(frozen=True)
class TranscriptFinal(Event):
    """The caller's whole turn, as the bot will answer it."""

    type: ClassVar[str] = "transcript.final"
    text: str
    turn_id: int


@dataclass(frozen=True)
class ResponseTextDelta(Event):
    """A piece of the bot's reply text, as it is generated."""

    type: ClassVar[str] = "response.text.delta"
    delta: str
    turn_id: int


@dataclass(frozen=True)
class ResponseAudioStarted(Event):
    """The bot's reply audio started playing into the call."""

    type: ClassVar[str] = "response.audio.started"
    turn_id: int


@dataclass(frozen=True)
class ResponseAudioDone(Event):
    """The bot's reply audio finished playing."""

    type: ClassVar[str] = "response.audio.done"
    turn_id: int


@dataclass(frozen=True)
class ResponseInterrupted(Event):
    """The reply stopped early; `spoken_text` is what the caller actually heard."""

    type: ClassVar[str] = "response.interrupted"
    turn_id: int
    reason: str  # barge_in | text_input | cancelled | say
    spoken_text: str


@dataclass(frozen=True)
class BotState(Event):
    """What the bot is doing now."""

    type: ClassVar[str] = "bot.state"
    state: BotStateName


@dataclass(frozen=True)
class TurnMetrics(Event):
    """Where one turn's time went (ms). Stages a turn did not have are omitted."""

    type: ClassVar[str] = "metrics"
    turn_id: int
    asr_ms: float | None = None
    llm_first_token_ms: float | None = None
    llm_done_ms: float | None = None
    tts_first_ms: float | None = None
    end_of_turn_ms: float | None = None
    first_audio_ms: float | None = None
    retrieval_ms: float | None = None  # knowledge-base search (a context source)
    vision_ms: float | None = None  # reading the camera frame (a context source)
    turn_complete_p: float | None = None  # the end-of-turn model's verdict (0..1), if asked
    partials_skipped: int | None = None  # partial transcripts skipped (recognizer busy/pause)
    moderation_ms: float | None = None  # checking the caller's turn (safety)


@dataclass(frozen=True)
class VisionUsed(Event):
    """The turn looked at the caller's camera picture: which engine, and how long it took."""

    type: ClassVar[str] = "vision.used"
    engine: str
    ms: float


@dataclass(frozen=True)
class SafetyFlagged(Event):
    """Moderation flagged what the caller said (`source` "caller": `action` "refused" = a
    calm reply instead of the LLM's, "warned" = answered anyway), a sentence the bot was
    about to say ("bot": "blocked", never spoken), or text for the LLM's context that held
    instructions ("context": "neutralised", quoted without them; `context` names the source:
    knowledge, passages, vision, notes...)."""

    type: ClassVar[str] = "safety.flagged"
    source: str  # caller | bot | context
    categories: tuple[str, ...]
    action: str  # refused | warned | blocked | neutralised
    context: str | None = None  # which context source (source "context" only)


@dataclass(frozen=True)
class Error(Event):
    """Something failed or a client message was refused; the call goes on unless it ends."""

    type: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True)
class IdleWarning(Event):
    """No speech (or typed turn) from the caller for a while: the call ends in `seconds_left`
    unless they speak. Silent audio (a muted microphone) is not activity."""

    type: ClassVar[str] = "idle.warning"
    seconds_left: float


@dataclass(frozen=True)
class Dtmf(Event):
    """The caller pressed a key on their phone (RFC 4733 telephone-event on a SIP call)."""

    type: ClassVar[str] = "dtmf"
    digit: str  # 0-9, *, #, A-D


SERVER_EVENTS: tuple[type[Event], ...] = (
    SpeechStarted, SpeechStopped, TranscriptPartial, TranscriptFinal, ResponseTextDelta,
    ResponseAudioStarted, ResponseAudioDone, ResponseInterrupted, BotState, TurnMetrics, VisionUsed,
    SafetyFlagged, Error, IdleWarning, Dtmf,
)


# ---- client -> server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InputText:
    """A typed turn: answered now, interrupting the bot."""

    type: ClassVar[str] = "input.text"
    text: str
    look: bool = False  # true: answer about the camera picture (vision is used for this turn)


@dataclass(frozen=True)
class ResponseCancel:
    """Stop the bot's current reply."""

    type: ClassVar[str] = "response.cancel"


ClientMessage = InputText | ResponseCancel
CLIENT_MESSAGES: tuple[type[InputText] | type[ResponseCancel], ...] = (InputText, ResponseCancel)


def json_schema(cls: type[Any]) -> dict[str, Any]:
    """A JSON schema of one event or client message, made from its fields."""
    properties: dict[str, Any] = {"type": {"const": cls.type}}
    required = ["type"]
    if issubclass(cls, Event):
        properties["t_ms"] = {"type": "number", "description": "ms since the call started"}
        required.append("t_ms")
    for f in dataclasses.fields(cls):
        properties[f.name] = _schema_of(str(f.type))
        if f.default is dataclasses.MISSING:
            required.append(f.name)
    return {"type": "object", "title": cls.type, "description": (cls.__doc__ or "").strip(),
            "properties": properties, "required": required}


def _schema_of(annotation: str) -> dict[str, Any]:
    base = annotation.replace(" | None", "")
    if base == "BotStateName":
        return {"enum": ["listening", "thinking", "speaking"]}
    if base.startswith("tuple[str"):
        return {"type": "array", "items": {"type": "string"}}
    return {"type": {"str": "string", "int": "integer", "float": "number",
                     "bool": "boolean"}.get(base, "string")}
