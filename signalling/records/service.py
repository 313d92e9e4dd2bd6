"""The call record: what the app keeps of each call — its transcript, its recording (opt-in),
its trace (when OTEL_* is set) — attached in one place every entrance goes through
(`AppState.call_started`), read by the record routes, and handed to `CallHooks.on_call_record`.

The recorder follows a call through three taps that every transport has: the call's events
(`Call.event_observers`), the caller's audio (`Call.audio_taps`, 16 kHz frames) and the bot's
audio as the caller hears it (`sent_listeners` / `cut_listeners` of the call's audio output: the
WebRTC track's sent frames, or the WebSocket playout clock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from callbot.pipeline import events as ev
from callbot.signalling.config import RecordSettings
from callbot.signalling.records.store import RecordStore
from callbot.signalling.records.tracing import CallTrace, CallTracer
from callbot.signalling.records.transcript import Transcript
from callbot.signalling.records.wav import StereoRecording

log = logging.getLogger(__name__)

PURGE_EVERY_S = 3600.0


class RecordedCall(Protocol):
    """What the recorder needs of a call (`calls.call.Call`)."""

    id: str
    started_at: float  # monotonic
    created_wall: float
    event_observers: list[Callable[[ev.Event], None]]
    audio_taps: list[Callable[[np.ndarray], None]]
    transport: Any  # .kind
    language: Any  # .current
    close_reason: str | None

    @property
    def output(self) -> object: ...


@dataclass(frozen=True)
class Found:
    owner: str
    transcript: dict[str, Any]
    recording: Path | None


class CallRecorder:
    def __init__(self, call: RecordedCall, owner: str, settings: RecordSettings,
                 tracer: CallTracer | None) -> None:
        self.call_id = call.id
        self.owner = owner
        self.started_at = call.started_at
        self.started_wall = call.created_wall
        self.transcript = Transcript(call.id, call.started_at)
        self.trace: CallTrace | None = (tracer.call(call.id, str(call.transport.kind))
                                        if tracer is not None else None)
        self.recording: StereoRecording | None = None
        self.erase = False  # DELETE while the call runs: nothing is kept when it ends
        call.event_observers.append(self.on_event)
        if settings.audio:
            path = Path(settings.audio_dir) / f"{call.id}.wav"
            self.recording = StereoRecording(path, max_backlog_s=settings.max_backlog_s)
            call.audio_taps.append(self._caller_audio)
            output = call.output
            sent = getattr(output, "sent_listeners", None)
            cut = getattr(output, "cut_listeners", None)
            if isinstance(sent, list):
                sent.append(self._bot_audio)
            else:
                log.warning("call %s: its audio output cannot be recorded", call.id)
            if isinstance(cut, list):
                cut.append(self._bot_cut)

    def _at(self, monotonic: float) -> float:
        return max(0.0, monotonic - self.started_at)

    def on_event(self, event: ev.Event) -> None:
        self.transcript.on_event(event)
        if self.trace is not None:
            self.trace.on_event(event)

    def _caller_audio(self, frame: np.ndarray) -> None:
        if self.recording is not None:
            self.recording.caller(frame, self._at(time.monotonic()))

    def _bot_audio(self, pcm: np.ndarray, rate: int, at: float) -> None:
        if self.recording is not None:
            self.recording.bot(pcm, rate, self._at(at))

    def _bot_cut(self, at: float) -> None:
        if self.recording is not None:
            self.recording.bot_cut(self._at(at))

    def end(self, language: str | None, reason: str) -> None:
        self.transcript.end(language)
        if self.recording is not None:
            self.recording.close(self._at(time.monotonic()))
        if self.trace is not None:
            self.trace.end(reason)


class RecordService:
    """The app's records: live calls in memory, ended ones in the store (if kept)."""

    def __init__(self, settings: RecordSettings, tracer: CallTracer | None = None,
                 redact: Callable[[str], str] | None = None) -> None:
        self.settings = settings
        self.tracer = tracer
        self.redact = redact if settings.redact_pii else None
        self.store = (RecordStore(settings.db, settings.retention_days)
                      if settings.stored else None)
        self.live: dict[str, CallRecorder] = {}
        self._purged_at = 0.0

    def attach(self, call: RecordedCall, owner: str) -> CallRecorder:
        recorder = CallRecorder(call, owner, self.settings, self.tracer)
        self.live[call.id] = recorder
        return recorder

    async def finish(self, call: RecordedCall) -> dict[str, Any] | None:
        """The call ended: its record, stored if kept (the transcript's JSON; None: none)."""
        recorder = self.live.pop(call.id, None)
        if recorder is None:
            return None
        recorder.end(getattr(call.language, "current", None), call.close_reason or "unknown")
        record = recorder.transcript.to_json(self.redact)
        if recorder.erase and recorder.recording is not None:
            await asyncio.to_thread(recorder.recording.wait_written)
            recorder.recording.path.unlink(missing_ok=True)
        if self.store is not None and not recorder.erase:
            recording = recorder.recording
            if recording is not None:
                await asyncio.to_thread(recording.wait_written)
                record["recording"] = {"duration_s": round(recording.duration_s, 2),
                                       "dropped_s": round(recording.dropped_s, 2)}
            path = recording.path if recording is not None and recording.failed is None else None
            try:
                await asyncio.to_thread(self.store.save, call.id, recorder.owner,
                                        recorder.started_wall, time.time(), record, path)
                if time.monotonic() - self._purged_at > PURGE_EVERY_S:
                    self._purged_at = time.monotonic()
                    await asyncio.to_thread(self.store.purge)
            except Exception:  # a full disk costs the record, not the server
                log.exception("call %s: storing its record failed", call.id)
        return record

    async def find(self, call_id: str) -> Found | None:
        recorder = self.live.get(call_id)
        if recorder is not None:
            recording = recorder.recording
            return Found(recorder.owner, recorder.transcript.to_json(self.redact),
                         recording.path if recording is not None else None)
        if self.store is None:
            return None
        stored = await asyncio.to_thread(self.store.get, call_id)
        if stored is None:
            return None
        return Found(stored.owner, stored.transcript, stored.recording)

    async def delete(self, call_id: str) -> bool:
        """Erase a call's record; a live call keeps none when it ends. False: none."""
        recorder = self.live.get(call_id)
        if recorder is not None:
            recorder.erase = True
            return True
        if self.store is None:
            return False
        return await asyncio.to_thread(self.store.delete, call_id)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.tracer is not None:
            self.tracer.shutdown()
