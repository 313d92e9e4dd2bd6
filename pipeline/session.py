"""One call's conversation: VAD segments -> transcript -> LLM -> TTS -> audio out, with
turn-taking and barge-in.

Latency comes from speculation: as soon as the caller pauses, the segment is transcribed and
the reply is generated and synthesized, but nothing is said or played until the turn is
confirmed over. How long a pause confirms it depends on the transcript: a question ends the
turn quickly, "Hello there." or a trailing "and" waits much longer. If the caller speaks again
first, the speculative work is dropped. If they speak while the bot talks, it stops at once
and the history keeps only what was heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .engines import Engines
from .llm.base import ChatMessage, LLMError
from .settings import TurnSettings
from .text import SentenceChunker, turn_completeness
from .vad import SegmentEvent, SpeechSegmenter, WebRtcVad

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]


class LLMTimeout(Exception):
    """The reply took longer than `TurnSettings.llm_timeout_s`."""


class AudioOutput(Protocol):
    """Where the bot's voice goes (the call's outgoing track, paced in real time)."""

    def enqueue(self, pcm: np.ndarray, sample_rate: int) -> None: ...

    def clear(self) -> float:
        """Drop all queued audio now; return how many seconds were dropped unheard."""
        ...

    def pending_seconds(self) -> float: ...

    async def wait_drained(self) -> None: ...


@dataclass
class Turn:
    id: int
    history_len: int  # the conversation this turn answers: history[:history_len] + its words
    user_text: str | None = None  # set once transcribed (or typed)
    speech_end: float | None = None  # perf_counter time the caller stopped talking
    committed: bool = False
    task: asyncio.Task[None] | None = None
    transcript_ready: asyncio.Event = field(default_factory=asyncio.Event)
    committed_event: asyncio.Event = field(default_factory=asyncio.Event)
    held_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    held_audio: list[tuple[str, np.ndarray, int]] = field(default_factory=list)
    played: list[tuple[str, float]] = field(default_factory=list)  # (text, seconds) enqueued
    reply_text: str = ""
    audio_started: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def spoken_text(self, dropped_seconds: float) -> str:
        """What the caller actually heard, given how much queued audio was dropped."""
        heard = sum(seconds for _, seconds in self.played) - dropped_seconds
        words: list[str] = []
        for text, seconds in self.played:
            if heard >= seconds - 0.05:
                words.extend(text.split())
            elif heard > 0:
                piece = text.split()
                words.extend(piece[: int(len(piece) * heard / seconds)])
            heard -= seconds
            if heard <= 0:
                break
        return " ".join(words)


class VoiceSession:
    def __init__(
        self,
        engines: Engines,
        *,
        output: AudioOutput,
        emit: EventSink,
        settings: TurnSettings | None = None,
        system_prompt: str | None = None,
        voice: str | None = None,
        language: str | None = None,
        tools: Sequence[Any] = (),
    ) -> None:
        self._engines = engines
        # Functions the LLM may call (engines whose stream_chat takes `tools=` only).
        self.tools = list(tools)
        self._output = output
        self._emit = emit
        self.settings = settings or TurnSettings()
        self._voice = voice
        self._language = language
        self._segmenter = SpeechSegmenter(
            WebRtcVad(self.settings.vad_aggressiveness), self.settings.segmenter
        )
        prompt = system_prompt or self.settings.system_prompt
        self.history: list[ChatMessage] = [{"role": "system", "content": prompt}]
        self._turn_ids = itertools.count(1)
        self._pending: Turn | None = None  # speculating, not yet confirmed
        self._active: Turn | None = None  # confirmed, answering
        self._carry_over = ""  # words of a turn retracted because it was answered unheard
        self._partial_task: asyncio.Task[None] | None = None
        self._partial_at_ms = 0
        self._closed = False
        self.state = "listening"

    # ---- inputs -------------------------------------------------------------------------

    def feed(self, frame: np.ndarray) -> None:
        """One 20 ms frame of the caller's audio, 16 kHz mono int16."""
        if self._closed:
            return
        event = self._segmenter.feed(frame)
        if event is SegmentEvent.STARTED:
            self._on_speech_started()
        elif event is SegmentEvent.PAUSED:
            self._start_speculation()
        elif event is SegmentEvent.RESUMED:
            self._drop_speculation()
        elif event is SegmentEvent.TOO_LONG:
            if self._pending is None:
                self._start_speculation()
            self._commit()
            return
        if self._segmenter.in_segment:
            if self._segmenter.paused:
                self._maybe_end_turn()
            else:
                self._maybe_partial()

    def submit_text(self, text: str) -> None:
        """A typed turn: answer it now, interrupting whatever the bot was doing."""
        text = text.strip()
        if not text or self._closed:
            return
        self._interrupt("text_input")
        self._drop_speculation()
        turn = Turn(
            id=next(self._turn_ids),
            history_len=len(self.history),
            user_text=text,
            speech_end=time.perf_counter(),
        )
        turn.transcript_ready.set()
        self._pending = turn
        turn.task = asyncio.create_task(self._answer(turn, audio=None))
        self._commit(close_segment=False)

    def cancel_response(self) -> None:
        self._interrupt("cancelled")

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._partial_task,) if t]
        for turn in (self._pending, self._active):
            if turn and turn.task:
                tasks.append(turn.task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending = self._active = None

    # ---- turn-taking ----------------------------------------------------------------------

    def _on_speech_started(self) -> None:
        self._partial_at_ms = 0
        self._send("vad.speech_started", {})
        if self._active is not None:
            self._interrupt("barge_in")
        self._set_state("listening")

    def _start_speculation(self) -> None:
        self._drop_speculation()
        audio = self._segmenter.voiced_audio()
        speech_end = time.perf_counter() - self._segmenter.silence_ms / 1000
        turn = Turn(id=next(self._turn_ids), history_len=len(self.history), speech_end=speech_end)
        turn.task = asyncio.create_task(self._answer(turn, audio=audio))
        self._pending = turn

    def _drop_speculation(self) -> None:
        turn, self._pending = self._pending, None
        if turn is not None and not turn.committed and turn.task is not None:
            turn.task.cancel()

    def _maybe_end_turn(self) -> None:
        turn = self._pending
        if turn is None:
            return
        s = self.settings
        if turn.user_text is None:
            needed = s.incomplete_end_ms  # not transcribed yet: only a long silence decides
        else:
            kind = turn_completeness(self._with_carry_over(turn.user_text))
            needed = {"question": s.question_end_ms, "statement": s.statement_end_ms}.get(
                kind, s.incomplete_end_ms
            )
        if self._segmenter.silence_ms >= needed:
            self._commit()

    def _commit(self, *, close_segment: bool = True) -> None:
        """The turn is over: say what was heard and let the speculative answer play."""
        turn, self._pending = self._pending, None
        if close_segment:
            self._segmenter.close()
            self._cancel_partial()
            self._send("vad.speech_stopped", {})
        if turn is None:
            return
        turn.committed = True
        turn.committed_event.set()
        turn.timings["commit"] = time.perf_counter()
        if turn.user_text is not None and not self._with_carry_over(turn.user_text):
            if turn.task:
                turn.task.cancel()  # noise, not words: nothing to answer
            self._set_state("listening")
            return
        self._active = turn
        if turn.user_text is not None:
            self._publish_transcript(turn)
        self._set_state("thinking")
        for name, fields in turn.held_events:
            self._send(name, fields)
        turn.held_events.clear()
        for text, pcm, rate in turn.held_audio:
            self._play(turn, text, pcm, rate)
        turn.held_audio.clear()

    def _publish_transcript(self, turn: Turn) -> None:
        assert turn.user_text is not None
        text = self._with_carry_over(turn.user_text)
        self._carry_over = ""
        turn.user_text = text
        self.history.append({"role": "user", "content": text})
        self._send("transcript.final", {"text": text, "turn_id": turn.id})

    def _interrupt(self, reason: str) -> None:
        turn, self._active = self._active, None
        if turn is None:
            return
        dropped = self._output.clear()
        if turn.task is not None:
            turn.task.cancel()
        spoken = turn.spoken_text(dropped)
        if spoken:
            self.history.append({"role": "assistant", "content": spoken})
        elif self.history and self.history[-1]["role"] == "user" and reason == "barge_in":
            # The caller heard nothing of the answer: they were not done. Take their words
            # back and let them lead the next turn, instead of answering half a question.
            self._carry_over = self.history.pop()["content"]
        self._send("response.interrupted", {"turn_id": turn.id, "reason": reason,
                                            "spoken_text": spoken})
        self._set_state("listening")

    def _with_carry_over(self, text: str) -> str:
        return f"{self._carry_over} {text}".strip() if self._carry_over else text.strip()

    # ---- partial transcripts ----------------------------------------------------------------

    def _maybe_partial(self) -> None:
        seg_ms = self._segmenter.segment_ms
        if (
            self._partial_task is not None
            or seg_ms - self._partial_at_ms < self.settings.partial_interval_ms
            or getattr(self._engines.asr, "busy", False)
        ):
            return
        self._partial_at_ms = seg_ms
        audio = self._segmenter.segment_audio
        self._partial_task = asyncio.create_task(self._partial(audio))

    async def _partial(self, audio: np.ndarray) -> None:
        try:
            result = await self._engines.asr.transcribe(
                audio, language=self._language, partial=True
            )
            if result.text and self._segmenter.in_segment:
                self._send("transcript.partial", {"text": self._with_carry_over(result.text)})
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed preview must not end the call
            log.exception("partial transcription failed")
        finally:
            self._partial_task = None

    def _cancel_partial(self) -> None:
        if self._partial_task is not None:
            self._partial_task.cancel()
            self._partial_task = None

    # ---- answering --------------------------------------------------------------------------

    async def _answer(self, turn: Turn, audio: np.ndarray | None) -> None:
        try:
            if audio is not None:
                started = time.perf_counter()
                result = await self._engines.asr.transcribe(audio, language=self._language)
                turn.timings["asr_ms"] = (time.perf_counter() - started) * 1000
                turn.user_text = result.text
                turn.transcript_ready.set()
                if turn.committed:  # the silence outran the transcription
                    if not self._with_carry_over(result.text):
                        self._set_state("listening")
                        self._active = None
                        return
                    self._publish_transcript(turn)
                elif self._segmenter.paused:
                    self._maybe_end_turn()
                if not self._with_carry_over(result.text):
                    return
            await self._reply(turn)
        except asyncio.CancelledError:
            raise
        except LLMTimeout as exc:
            log.warning("turn %s: %s", turn.id, exc)
            self._turn_event(turn, "error", {"code": "llm_timeout", "message": str(exc)})
        except LLMError as exc:
            self._turn_event(turn, "error", {"code": "llm_failed", "message": str(exc)})
        except Exception as exc:
            log.exception("turn %s failed", turn.id)
            self._turn_event(turn, "error", {"code": "pipeline_failed", "message": str(exc)})
        finally:
            if self._active is turn:
                self._active = None
                self._set_state("listening")

    async def _reply(self, turn: Turn) -> None:
        assert turn.user_text is not None
        user_text = self._with_carry_over(turn.user_text)
        messages = self._trimmed(self.history[: turn.history_len])
        messages.append({"role": "user", "content": user_text})
        chunker = SentenceChunker()
        llm_started = time.perf_counter()
        tools = self.tools
        stream = self._engines.llm.stream_chat(
            messages, max_tokens=self.settings.max_tokens, temperature=self.settings.temperature,
            **({"tools": tools} if tools else {}),
        )
        timeout = self.settings.llm_timeout_s
        try:
            async with asyncio.timeout(timeout):  # a hung model must not wedge the call
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    async for delta in stream:
                        if "llm_first_token_ms" not in turn.timings:
                            turn.timings["llm_first_token_ms"] = (
                                time.perf_counter() - llm_started) * 1000
                        turn.reply_text += delta
                        self._turn_event(turn, "response.text.delta", {"delta": delta})
                        for piece in chunker.push(delta):
                            await self._speak(turn, piece)
                for piece in chunker.flush():
                    await self._speak(turn, piece)
        except TimeoutError:
            raise LLMTimeout(f"no complete reply within {timeout:g} s") from None
        turn.timings["llm_done_ms"] = (time.perf_counter() - llm_started) * 1000
        await turn.committed_event.wait()  # a speculative reply waits for the turn to end
        if turn.played:
            await self._output.wait_drained()
            self._send("response.audio.done", {"turn_id": turn.id})
        self.history.append({"role": "assistant", "content": turn.reply_text.strip()})
        self._send_metrics(turn)

    async def _speak(self, turn: Turn, text: str) -> None:
        started = time.perf_counter()
        audio = await self._engines.tts.synthesize(text, voice=self._voice)
        if "tts_first_ms" not in turn.timings:
            turn.timings["tts_first_ms"] = (time.perf_counter() - started) * 1000
        if audio.pcm.size == 0:
            return
        if turn.committed:
            self._play(turn, text, audio.pcm, audio.sample_rate)
        else:
            turn.held_audio.append((text, audio.pcm, audio.sample_rate))

    def _play(self, turn: Turn, text: str, pcm: np.ndarray, rate: int) -> None:
        if self._active is not turn:
            return
        self._output.enqueue(pcm, rate)
        turn.played.append((text, len(pcm) / rate))
        if not turn.audio_started:
            turn.audio_started = True
            turn.timings["first_audio"] = time.perf_counter()
            self._send("response.audio.started", {"turn_id": turn.id})
            self._set_state("speaking")

    def _turn_event(self, turn: Turn, name: str, fields: dict[str, Any]) -> None:
        if turn.committed:
            self._send(name, fields)
        else:
            turn.held_events.append((name, fields))

    def _trimmed(self, history: list[ChatMessage]) -> list[ChatMessage]:
        keep = self.settings.max_history_messages
        return history[:1] + history[1:][-keep:]

    def _send_metrics(self, turn: Turn) -> None:
        t = turn.timings
        fields: dict[str, Any] = {"turn_id": turn.id}
        for key in ("asr_ms", "llm_first_token_ms", "tts_first_ms", "llm_done_ms"):
            if key in t:
                fields[key] = round(t[key], 1)
        if turn.speech_end is not None:
            if "commit" in t:
                fields["end_of_turn_ms"] = round((t["commit"] - turn.speech_end) * 1000, 1)
            if "first_audio" in t:
                fields["first_audio_ms"] = round((t["first_audio"] - turn.speech_end) * 1000, 1)
        self._send("metrics", fields)

    # ---- plumbing -----------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._send("bot.state", {"state": state})

    def _send(self, name: str, fields: dict[str, Any]) -> None:
        try:
            self._emit(name, fields)
        except Exception:  # an event that cannot be delivered must not break the turn
            log.exception("could not deliver event %s", name)
