"""One turn of a call and where its audio goes: the data the session's turn-taking works on."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from . import events as ev
from .text import join_tokens, speech_tokens


class AudioOutput(Protocol):
    """Where the bot's voice goes (the call's outgoing track, paced in real time)."""

    def enqueue(self, pcm: np.ndarray, sample_rate: int) -> None: ...

    def clear(self) -> float:
        """Drop all queued audio now; return how many seconds were dropped unheard."""
        ...

    def hold(self) -> None:
        """Pause the voice (the caller may be starting to talk); queued audio is kept."""
        ...

    def resume(self) -> None:
        """Go on from where `hold` paused (`clear` ends a hold too)."""
        ...

    def pending_seconds(self) -> float: ...

    async def wait_drained(self) -> None: ...


@dataclass
class Turn:
    id: int
    history_len: int  # the conversation this turn answers: history[:history_len] + its words
    user_text: str | None = None  # set once transcribed (or typed)
    speech_end: float | None = None  # perf_counter time the caller stopped talking
    audio_complete: float | None = None  # the end-of-turn policy's verdict on the audio
    look: bool = False  # a typed turn that asked to use the picture
    committed: bool = False
    task: asyncio.Task[None] | None = None
    transcript_ready: asyncio.Event = field(default_factory=asyncio.Event)
    committed_event: asyncio.Event = field(default_factory=asyncio.Event)
    held_events: list[ev.Event] = field(default_factory=list)
    held_audio: list[tuple[str, np.ndarray, int]] = field(default_factory=list)
    played: list[tuple[str, float]] = field(default_factory=list)  # (text, seconds) enqueued
    reply_text: str = ""
    trusted: bool = False  # a reply of the operator's (a safety refusal): guards skip it
    audio_started: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # perf_counter time of each step

    def mark(self, step: str) -> None:
        """Note when `step` first happened (the turn's timeline, logged at debug level)."""
        self.marks.setdefault(step, time.perf_counter())

    def timeline(self) -> str:
        """The steps in order, in ms after the caller stopped talking."""
        origin = self.speech_end if self.speech_end is not None else min(
            self.marks.values(), default=0.0)
        steps = sorted(self.marks.items(), key=lambda item: item[1])
        return " ".join(f"{name} {(t - origin) * 1000:.0f}" for name, t in steps)

    def spoken_text(self, dropped_seconds: float) -> str:
        """What the caller actually heard, given how much queued audio was dropped."""
        heard = sum(seconds for _, seconds in self.played) - dropped_seconds
        words: list[str] = []
        for text, seconds in self.played:
            if heard >= seconds - 0.05:
                words.extend(speech_tokens(text))
            elif heard > 0:
                piece = speech_tokens(text)  # Chinese: character by character
                words.extend(piece[: int(len(piece) * heard / seconds)])
            heard -= seconds
            if heard <= 0:
                break
        return join_tokens(words)
