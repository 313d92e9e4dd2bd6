"""Audio of the OpenAI Realtime WebSocket transport: base64 PCM16 in and out, at the rate the
session declares, converted to and from the pipeline's 16 kHz."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable

import numpy as np
from av import AudioFrame

from callbot.pipeline.audio import FRAME_SAMPLES, PIPELINE_RATE
from callbot.rtc.resample import Rechunker, frame_to_mono, mono_resampler, resample_pcm

RATES = (8_000, 16_000, 24_000, 44_100, 48_000)  # audio/pcm rates a session may declare
DELTA_SECONDS = 0.2  # audio deltas sent to the client are cut this long


class BadAudio(ValueError):
    """An `input_audio_buffer.append` whose audio is not base64 PCM16."""


def decode_pcm16(data: str) -> np.ndarray:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadAudio("'audio' is not valid base64") from None
    if len(raw) % 2:
        raise BadAudio("'audio' is not 16-bit PCM (odd number of bytes)")
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def encode_pcm16(pcm: np.ndarray) -> str:
    return base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii")


class InputConverter:
    """Client audio at the session's rate -> 20 ms frames of 16 kHz mono int16, streamed
    through one long-lived resampler (no clicks at chunk edges)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = mono_resampler(PIPELINE_RATE)
        self._rechunker = Rechunker(FRAME_SAMPLES)
        self._pts = 0

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        if pcm.size == 0:
            return []
        if self.rate == PIPELINE_RATE:
            return self._rechunker.push(pcm)
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16",
            layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += pcm.size
        return self._rechunker.push(frame_to_mono(frame, self._resampler))


class StreamingOutput:
    """The bot's voice for a WebSocket client (`pipeline.session.AudioOutput`).

    Audio is sent as soon as it is synthesized, in `response.output_audio.delta` pieces; the
    client plays it. A playout clock, running as the client would play it in real time, says
    how much of it has been heard: `clear()` (barge-in) returns what was still unplayed, and
    `wait_drained()` ends when the client has played it all.
    """

    def __init__(self, send: Callable[[np.ndarray], None], rate: int) -> None:
        self._send = send
        self.rate = rate
        self._end = 0.0  # monotonic time when everything sent so far has been played
        self._cleared = asyncio.Event()
        self.frames_sent = 0  # 20 ms frames' worth of audio sent (for the call metrics)
        self.frames_late = 0
        # what the client will play and when (pcm, rate, monotonic start), and when a
        # barge-in cut it (monotonic): the call's recording
        self.sent_listeners: list[Callable[[np.ndarray, int, float], None]] = []
        self.cut_listeners: list[Callable[[float], None]] = []

    def enqueue(self, pcm: np.ndarray, sample_rate: int) -> None:
        audio = resample_pcm(pcm, sample_rate, self.rate)
        if audio.size == 0:
            return
        now = time.monotonic()
        for listener in self.sent_listeners:
            listener(audio, self.rate, max(now, self._end))
        self._end = max(now, self._end) + audio.size / self.rate
        self.frames_sent += round(audio.size / self.rate * 50)
        step = int(self.rate * DELTA_SECONDS)
        for start in range(0, audio.size, step):
            self._send(audio[start : start + step])

    def clear(self) -> float:
        now = time.monotonic()
        dropped = max(0.0, self._end - now)
        if dropped:
            for listener in self.cut_listeners:
                listener(now)
        self._end = now
        self._cleared.set()
        self._cleared = asyncio.Event()
        return dropped

    def hold(self) -> None:
        """Nothing to do: what was sent is the client's to play (it pauses on
        `input_audio_buffer.speech_started` if it wants to)."""

    def resume(self) -> None:
        pass

    def pending_seconds(self) -> float:
        return max(0.0, self._end - time.monotonic())

    async def wait_drained(self) -> None:
        while (left := self._end - time.monotonic()) > 0:
            cleared = self._cleared
            try:
                await asyncio.wait_for(cleared.wait(), timeout=left)
            except TimeoutError:
                pass
