"""A call's transcript, built from the call's typed events (`pipeline.events`).

Caller turns come from `transcript.final` (timed by the VAD's speech start and stop); bot turns
from the response events: the text as generated, and as heard (`response.interrupted` carries
what was spoken before a barge-in). Times are milliseconds on the call's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from callbot.pipeline import events as ev

DTMF_BURST_MS = 1500.0  # keys pressed closer than this are one entry (as the LLM hears them)


@dataclass
class TurnRecord:
    role: str  # caller | bot
    text: str
    start_ms: float
    end_ms: float | None = None
    turn_id: int | None = None
    heard_text: str | None = None  # bot: what the caller heard (cut at a barge-in)
    interrupted: str | None = None  # bot: why it stopped early (barge_in, text_input, ...)
    latency: dict[str, Any] | None = None  # bot: the turn's stage timings (ms)
    safety: list[dict[str, Any]] = field(default_factory=list)
    dtmf: str | None = None  # caller: keys pressed on a phone (one record per burst)

    def to_json(self, redact: Callable[[str], str] | None = None) -> dict[str, Any]:
        def clean(text: str) -> str:
            return redact(text) if redact is not None else text

        out: dict[str, Any] = {"role": self.role, "text": clean(self.text),
                               "start_ms": round(self.start_ms),
                               "end_ms": round(self.end_ms if self.end_ms is not None
                                               else self.start_ms)}
        if self.turn_id is not None:
            out["turn_id"] = self.turn_id
        if self.role == "bot":
            out["heard_text"] = clean(self.heard_text if self.heard_text is not None
                                      else self.text)
        if self.interrupted:
            out["interrupted"] = self.interrupted
        if self.latency:
            out["latency_ms"] = self.latency
        if self.safety:
            out["safety"] = self.safety
        if self.dtmf is not None:
            out["dtmf"] = self.dtmf
        return out


class Transcript:
    """Follows one call's events; `to_json()` / `to_vtt()` at any time (live or ended)."""

    def __init__(self, call_id: str, started_at: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.call_id = call_id
        self.started_at = started_at  # monotonic time the call started
        self._clock = clock
        self.turns: list[TurnRecord] = []
        self._bot: dict[int, TurnRecord] = {}  # turn id -> its bot turn
        self._speech_start: float | None = None
        self._speech_stop: float | None = None
        self.language: str | None = None
        self.ended_ms: float | None = None

    def _now_ms(self) -> float:
        return (self._clock() - self.started_at) * 1000

    def on_event(self, event: ev.Event) -> None:
        now = self._now_ms()
        if isinstance(event, ev.SpeechStarted):
            self._speech_start, self._speech_stop = now, None
        elif isinstance(event, ev.SpeechStopped):
            self._speech_stop = now
        elif isinstance(event, ev.TranscriptFinal):
            start = self._speech_start if self._speech_start is not None else now
            end = self._speech_stop if self._speech_stop is not None else now
            self.turns.append(TurnRecord("caller", event.text, start, end,
                                         turn_id=event.turn_id))
            self._speech_start = self._speech_stop = None
        elif isinstance(event, ev.ResponseTextDelta):
            self._bot_turn(event.turn_id, now).text += event.delta
        elif isinstance(event, ev.ResponseAudioStarted):
            turn = self._bot_turn(event.turn_id, now)
            turn.start_ms = min(turn.start_ms, now) if turn.text else now
        elif isinstance(event, ev.ResponseAudioDone):
            self._bot_turn(event.turn_id, now).end_ms = now
        elif isinstance(event, ev.ResponseInterrupted):
            turn = self._bot_turn(event.turn_id, now)
            turn.heard_text, turn.interrupted, turn.end_ms = (
                event.spoken_text, event.reason, now)
        elif isinstance(event, ev.TurnMetrics):
            fields = event.fields()
            fields.pop("turn_id", None)
            self._bot_turn(event.turn_id, now).latency = fields
        elif isinstance(event, ev.Dtmf):
            last = self.turns[-1] if self.turns else None
            if (last is not None and last.dtmf is not None and last.end_ms is not None
                    and now - last.end_ms <= DTMF_BURST_MS):
                last.dtmf += event.digit  # "1", "2" pressed in a row: one entry "12"
                last.end_ms = now
            else:
                self.turns.append(TurnRecord("caller", "", now, now, dtmf=event.digit))
        elif isinstance(event, ev.SafetyFlagged):
            role = "caller" if event.source == "caller" else "bot"
            last = next((t for t in reversed(self.turns) if t.role == role), None)
            if last is not None:
                entry: dict[str, Any] = {"categories": list(event.categories),
                                         "action": event.action}
                if event.context is not None:  # instructions taken out of the bot's context
                    entry["context"] = event.context
                last.safety.append(entry)

    def _bot_turn(self, turn_id: int, now: float) -> TurnRecord:
        turn = self._bot.get(turn_id)
        if turn is None:
            turn = self._bot[turn_id] = TurnRecord("bot", "", now, turn_id=turn_id)
            self.turns.append(turn)
            if len(self._bot) > 64:  # only recent turns still get events: bounded memory
                self._bot.pop(next(iter(self._bot)))
        return turn

    def end(self, language: str | None) -> None:
        self.language = language
        self.ended_ms = self._now_ms()

    def to_json(self, redact: Callable[[str], str] | None = None) -> dict[str, Any]:
        turns = [t.to_json(redact) for t in self.turns if t.text or t.heard_text or t.dtmf]
        out: dict[str, Any] = {"call_id": self.call_id, "turns": turns,
                               "ended": self.ended_ms is not None}
        if self.language is not None:
            out["language"] = self.language
        if self.ended_ms is not None:
            out["duration_ms"] = round(self.ended_ms)
        return out


def to_vtt(record: dict[str, Any]) -> str:
    """WebVTT from a transcript's JSON: one cue per turn, `<v caller>`/`<v bot>` voices."""
    lines = ["WEBVTT", ""]
    for i, turn in enumerate(record.get("turns", []), 1):
        start = float(turn["start_ms"])
        end = max(float(turn["end_ms"]), start + 1)
        text = turn.get("heard_text", turn["text"]) if turn["role"] == "bot" else turn["text"]
        if not text and turn.get("dtmf"):
            text = f"[keypad: {turn['dtmf']}]"
        text = " ".join(str(text).replace("-->", "->").split())  # a cue is one line, no arrow
        lines += [str(i), f"{_vtt_time(start)} --> {_vtt_time(end)}",
                  f"<v {turn['role']}>{text}", ""]
    return "\n".join(lines)


def _vtt_time(ms: float) -> str:
    total = int(round(ms))
    hours, rest = divmod(total, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"
