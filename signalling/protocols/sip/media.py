"""A phone call's audio: G.711 at 8 kHz both ways, resampled once.

In: each RTP frame (8 kHz, decoded by aiortp) goes through one long-lived resampler to the
pipeline's 16 kHz and is cut into its 20 ms frames. Out: each synthesized sentence is
resampled once to 8 kHz and sent as 20 ms RTP packets on the wall clock, with silence between
sentences (phones and carriers expect a steady stream).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
from av import AudioFrame

from callbot.pipeline.audio import FRAME_SAMPLES, PIPELINE_RATE, take_samples
from callbot.rtc.resample import Rechunker, mono_resampler, resample_pcm

log = logging.getLogger(__name__)

PHONE_RATE = 8000
PTIME_S = 0.020
PHONE_FRAME = int(PHONE_RATE * PTIME_S)  # 160 samples: one G.711 packet


class RtpSender(Protocol):
    def send_audio_pcm_auto(self, pcm: bytes) -> int: ...


class PhoneInput:
    """8 kHz PCM from RTP -> 16 kHz 20 ms frames for the call."""

    def __init__(self, deliver: Callable[[np.ndarray], None]) -> None:
        self._deliver = deliver
        self._resampler = mono_resampler(PIPELINE_RATE)
        self._chunks = Rechunker(FRAME_SAMPLES)
        self._pts = 0

    def push(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype=np.int16)
        if samples.size == 0:
            return
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = PHONE_RATE
        frame.pts = self._pts
        self._pts += samples.size
        for out in self._resampler.resample(frame):
            for chunk in self._chunks.push(out.to_ndarray().reshape(-1).astype(np.int16)):
                self._deliver(chunk)


class PhoneOutput:
    """The bot's voice on a phone call (`pipeline.turn.AudioOutput`): queued at 8 kHz, sent
    in 20 ms packets at wall-clock pace by `run()`; `clear()` silences it within a packet."""

    def __init__(self) -> None:
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._held = False
        self.frames_sent = 0
        self.voice_frames_sent = 0
        self.frames_late = 0
        # (pcm, rate, monotonic time) of each voice packet as it goes out: the call's recording
        self.sent_listeners: list[Callable[[np.ndarray, int, float], None]] = []

    def enqueue(self, pcm: np.ndarray, sample_rate: int) -> None:
        audio = resample_pcm(pcm, sample_rate, PHONE_RATE)
        if audio.size:
            self._chunks.append(audio)
            self._queued += audio.size
            self._drained.clear()

    def clear(self) -> float:
        dropped = self._queued
        self._held = False
        self._chunks.clear()
        self._queued = 0
        self._drained.set()
        return dropped / PHONE_RATE

    def hold(self) -> None:
        self._held = True

    def resume(self) -> None:
        self._held = False

    def pending_seconds(self) -> float:
        return self._queued / PHONE_RATE

    async def wait_drained(self) -> None:
        await self._drained.wait()

    def _next_frame(self) -> np.ndarray | None:
        """The next 20 ms of voice, or None (silence)."""
        if self._held or not self._chunks:
            return None
        out, filled = take_samples(self._chunks, PHONE_FRAME)
        self._queued -= filled
        if not self._chunks:
            self._drained.set()
        return out

    async def run(self, rtp: RtpSender) -> None:
        """Send a packet every 20 ms until cancelled (silence when there is nothing to say)."""
        silence = bytes(PHONE_FRAME * 2)
        start = time.monotonic()
        sent = 0
        while True:
            due = start + sent * PTIME_S
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.2:  # the loop stalled: start again from now, do not burst
                self.frames_late += 1
                start, sent = now, 0
            frame = self._next_frame()
            if frame is None:
                rtp.send_audio_pcm_auto(silence)
            else:
                rtp.send_audio_pcm_auto(frame.tobytes())
                self.voice_frames_sent += 1
                for listener in self.sent_listeners:
                    listener(frame, PHONE_RATE, time.monotonic())
            sent += 1
            self.frames_sent += 1
