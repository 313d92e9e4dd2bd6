"""Scripted engines for fast, deterministic tests of turn-taking (and of apps built on callbot).

They implement the same stage interfaces as the real models, with timings you choose:

    engines = Engines(asr=ScriptedASR(["How many legs does a spider have?"], final_s=0.05),
                      llm=ScriptedLLM("Eight.", first_token_s=0.05),
                      tts=ScriptedTTS(seconds_per_char=0.03))
    session = VoiceSession(engines, output=..., emit=..., vad=EnergyVad())
    for frame in voice_frames(800) + silence_frames(600):
        session.feed(frame)

`EnergyVad` calls a frame speech when it is loud, so `voice_frames` (a tone) and
`silence_frames` (zeros) drive the segmenter exactly. Nothing here loads a model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np

from . import events as ev
from .asr.base import Transcript
from .audio import FRAME_SAMPLES, PIPELINE_RATE
from .errors import LLMError
from .llm.base import ChatMessage
from .llm.tools import Tool
from .tts.base import SynthesizedAudio


class EnergyVad:
    """Speech = a frame louder than `threshold` RMS (int16 units)."""

    def __init__(self, threshold: float = 500.0) -> None:
        self.threshold = threshold

    def is_speech(self, frame: np.ndarray) -> bool:
        return float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) > self.threshold


def voice_frames(ms: int, amplitude: int = 8000) -> list[np.ndarray]:
    """`ms` of a 220 Hz tone in 20 ms frames (speech, to `EnergyVad`)."""
    n = ms // 20
    t = np.arange(n * FRAME_SAMPLES) / PIPELINE_RATE
    tone = (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    return list(tone.reshape(n, FRAME_SAMPLES))


def silence_frames(ms: int) -> list[np.ndarray]:
    return [np.zeros(FRAME_SAMPLES, dtype=np.int16) for _ in range(ms // 20)]


class ScriptedASR:
    """Final transcripts come from `finals`, in order (the last one repeats); partials show
    the start of the next final. Each takes `final_s` / `partial_s` of (async) time."""

    name = "scripted-asr"

    def __init__(self, finals: Sequence[str], *, final_s: float = 0.05,
                 partial_s: float = 0.02, languages: tuple[str, ...] | None = None) -> None:
        self.finals = list(finals)
        self.final_s = final_s
        self.partial_s = partial_s
        self.languages = languages
        self.calls: list[tuple[bool, float]] = []  # (partial, audio seconds)
        self.prompts: list[str | None] = []  # the prompt of each call
        self._running = 0

    @property
    def busy(self) -> bool:
        return self._running > 0

    async def transcribe(self, pcm: np.ndarray, *, language: str | None = None,
                         partial: bool = False, prompt: str | None = None) -> Transcript:
        audio_s = len(pcm) / PIPELINE_RATE
        self.prompts.append(prompt)
        self.calls.append((partial, audio_s))
        text = self.finals[0] if self.finals else ""
        if partial:
            await asyncio.sleep(self.partial_s)
            words = text.split()
            return Transcript(" ".join(words[: max(1, len(words) // 2)]), language, 0, audio_s)
        self._running += 1
        try:
            await asyncio.sleep(self.final_s)
        finally:
            self._running -= 1
        if len(self.finals) > 1:
            self.finals.pop(0)
        return Transcript(text, language, self.final_s * 1000, audio_s * 1000)

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass


class ScriptedLLM:
    """Replies with `reply` (a string, or a function of the messages), word by word: the first
    word after `first_token_s`, then one every `token_s`. `fail` makes every reply fail."""

    name = "scripted-llm"
    supports_tools = False

    def __init__(self, reply: str | Callable[[list[ChatMessage]], str] = "Eight legs.", *,
                 first_token_s: float = 0.05, token_s: float = 0.01, fail: bool = False) -> None:
        self.reply = reply
        self.first_token_s = first_token_s
        self.token_s = token_s
        self.fail = fail
        self.requests: list[list[ChatMessage]] = []

    async def stream_chat(self, messages: list[ChatMessage], *, max_tokens: int,
                          temperature: float, tools: Sequence[Tool] = ()) -> AsyncIterator[str]:
        self.requests.append([dict(m) for m in messages])  # type: ignore[misc]
        await asyncio.sleep(self.first_token_s)
        if self.fail:
            raise LLMError("scripted failure")
        text = self.reply(messages) if callable(self.reply) else self.reply
        for i, word in enumerate(text.split(" ")):
            if i:
                await asyncio.sleep(self.token_s)
            yield word if i == 0 else " " + word

    def warm_up(self, system_prompt: str) -> None:
        pass

    async def close(self) -> None:
        pass


class ScriptedTTS:
    """A tone lasting `seconds_per_char` per character, ready after `delay_s`."""

    voices = ("scripted",)

    def __init__(self, *, seconds_per_char: float = 0.04, delay_s: float = 0.02,
                 sample_rate: int = 16_000) -> None:
        self.seconds_per_char = seconds_per_char
        self.delay_s = delay_s
        self.sample_rate = sample_rate
        self.texts: list[str] = []

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        self.texts.append(text)
        await asyncio.sleep(self.delay_s)
        n = int(len(text) * self.seconds_per_char * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        pcm = (6000 * np.sin(2 * np.pi * 330 * t)).astype(np.int16)
        return SynthesizedAudio(pcm, self.sample_rate, self.delay_s * 1000)

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryOutput:
    """An AudioOutput that keeps what it is given. With `realtime`, the audio "plays" at wall
    clock speed (so a reply can be interrupted); otherwise it is heard at once."""

    def __init__(self, realtime: bool = False) -> None:
        self.realtime = realtime
        self.enqueued: list[tuple[np.ndarray, int]] = []
        self.enqueued_at: list[float] = []  # time.monotonic() of each enqueue
        self.clears: list[float] = []
        self.holds = 0
        self._ends_at = 0.0
        self._held_left: float | None = None  # while held: the seconds still to play

    def enqueue(self, pcm: np.ndarray, sample_rate: int) -> None:
        self.enqueued.append((pcm, sample_rate))
        self.enqueued_at.append(time.monotonic())
        if self._held_left is not None:
            self._held_left += len(pcm) / sample_rate
        else:
            self._ends_at = max(self._ends_at, time.monotonic()) + len(pcm) / sample_rate

    def clear(self) -> float:
        dropped = self.pending_seconds()
        self.clears.append(dropped)
        self._ends_at = time.monotonic()
        self._held_left = None
        return dropped

    def hold(self) -> None:
        if self._held_left is None:
            self.holds += 1
            self._held_left = self.pending_seconds()

    def resume(self) -> None:
        if self._held_left is not None:
            self._ends_at = time.monotonic() + self._held_left
            self._held_left = None

    @property
    def held(self) -> bool:
        return self._held_left is not None

    def pending_seconds(self) -> float:
        if not self.realtime:
            return 0.0
        if self._held_left is not None:
            return self._held_left
        return max(0.0, self._ends_at - time.monotonic())

    async def wait_drained(self) -> None:
        while True:  # polled: clear() ends the wait early
            pending = self.pending_seconds()
            if pending <= 0:
                return
            await asyncio.sleep(min(pending, 0.01))

    @property
    def seconds(self) -> float:
        return sum(len(pcm) / rate for pcm, rate in self.enqueued)


class EventRecorder:
    """An event sink that keeps every event, with helpers to look them up by wire name."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def __call__(self, event: ev.Event) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [e.type for e in self.events]

    def all(self, name: str) -> list[dict[str, Any]]:
        return [e.fields() for e in self.events if e.type == name]

    def index(self, name: str) -> int:
        return self.names().index(name)

    async def wait_for(self, name: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.all(name):
                return found[-1]
            await asyncio.sleep(0.005)
        raise AssertionError(f"no {name} event in {timeout} s; got {self.names()}")
