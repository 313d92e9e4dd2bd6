"""Media tracks of a call: the bot's paced voice out, the caller's audio and video in."""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from .resample import Rechunker, frame_to_mono, mono_resampler, resample_pcm

log = logging.getLogger(__name__)

WEBRTC_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = WEBRTC_RATE * FRAME_MS // 1000  # 960
_TIME_BASE = fractions.Fraction(1, WEBRTC_RATE)
LATE_FRAME_S = 0.04  # a frame handed out this late counts as late (a gap the caller hears)
RESYNC_S = 0.2  # further behind than this, restart the clock instead of bursting to catch up


class PacedAudioTrack(MediaStreamTrack):
    """Outgoing audio: 20 ms frames at wall-clock pace, silence when there is nothing to say.

    aiortc pulls `recv()` as fast as it returns, so the pacing is ours. The queue lives here,
    not in aiortc, so `clear()` silences the bot within one frame.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0  # samples waiting in _chunks
        self._drained = asyncio.Event()
        self._drained.set()
        self._held = False  # paused at a possible barge-in: silence out, queue kept
        self._clock_start: float | None = None
        self._pts = 0
        self.frames_sent = 0
        self.frames_late = 0
        self.voice_frames_sent = 0
        # Called with every frame as it is sent (silence too), at WEBRTC_RATE: the far-end
        # reference of the call's echo canceller is what the caller was actually sent.
        self.on_sent: list[Callable[[np.ndarray, int], None]] = []
        # (pcm, rate, monotonic time) of each voice frame as it goes out: what the caller
        # hears, for the call's recording
        self.sent_listeners: list[Callable[[np.ndarray, int, float], None]] = []

    # -- the pipeline's side (pipeline.session.AudioOutput) --

    def enqueue(self, pcm: np.ndarray, sample_rate: int) -> None:
        audio = resample_pcm(pcm, sample_rate, WEBRTC_RATE)
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
        return dropped / WEBRTC_RATE

    def hold(self) -> None:
        self._held = True

    def resume(self) -> None:
        self._held = False

    def pending_seconds(self) -> float:
        return self._queued / WEBRTC_RATE

    async def wait_drained(self) -> None:
        await self._drained.wait()

    # -- aiortc's side --

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now
        else:
            self._pts += FRAME_SAMPLES
            due = self._clock_start + self._pts / WEBRTC_RATE
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > RESYNC_S:
                self._clock_start = now - self._pts / WEBRTC_RATE  # stalled: don't burst
            elif now - due > LATE_FRAME_S:
                self.frames_late += 1
        voiced = self.voice_frames_sent
        samples = self._take(FRAME_SAMPLES)
        for listener in self.on_sent:
            try:
                listener(samples, WEBRTC_RATE)
            except Exception:  # a listener's bug must not silence the bot
                log.exception("on_sent listener failed")
        if self.sent_listeners and self.voice_frames_sent != voiced:
            for record_listener in self.sent_listeners:
                record_listener(samples, WEBRTC_RATE, now)
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(samples.tobytes())
        frame.pts = self._pts
        frame.sample_rate = WEBRTC_RATE
        frame.time_base = _TIME_BASE
        self.frames_sent += 1
        return frame

    def _take(self, n: int) -> np.ndarray:
        if not self._queued or self._held:
            return np.zeros(n, dtype=np.int16)
        self.voice_frames_sent += 1
        parts: list[np.ndarray] = []
        need = n
        while need and self._chunks:
            head = self._chunks[0]
            if len(head) <= need:
                parts.append(self._chunks.popleft())
                need -= len(head)
            else:
                parts.append(head[:need])
                self._chunks[0] = head[need:]
                need = 0
        taken = n - need
        self._queued -= taken
        if need:
            parts.append(np.zeros(need, dtype=np.int16))
        if not self._queued:
            self._drained.set()
        return np.concatenate(parts)


async def pump_audio(
    track: MediaStreamTrack,
    on_frame: Callable[[np.ndarray], None],
    *,
    rate: int,
    frame_samples: int,
) -> None:
    """Read the caller's audio until the track ends; hand on mono int16 frames at `rate`."""
    resampler = mono_resampler(rate)
    rechunker = Rechunker(frame_samples)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        assert isinstance(frame, AudioFrame)  # an audio track yields audio frames
        for chunk in rechunker.push(frame_to_mono(frame, resampler)):
            on_frame(chunk)


class LatestVideoFrame:
    """Keeps only the newest decoded video frame, plus a few recent ones (one a second) for a
    pipeline that wants to look: memory stays bounded whatever the size or rate of the video."""

    def __init__(self, history_s: float = 6.0, history_every_s: float = 1.0) -> None:
        self.frame: Any | None = None
        self.frames_received = 0
        self.received_at: float | None = None
        self.started = False  # a video track arrived from the caller
        self.ended = False  # ... and it has ended (camera turned off, track stopped)
        self._history_s = history_s
        self._every_s = history_every_s
        self.history: collections.deque[tuple[float, Any]] = collections.deque(
            maxlen=max(1, int(history_s / history_every_s)))

    def put(self, frame: Any, now: float) -> None:
        self.frame = frame
        self.frames_received += 1
        self.received_at = now
        if not self.history or now - self.history[-1][0] >= self._every_s:
            self.history.append((now, frame))

    def clear(self) -> None:
        self.frame = None
        self.history.clear()

    def recent(self, now: float | None = None) -> list[tuple[float, VideoFrame]]:
        """(age in seconds, frame), newest first: the latest frame, then the kept history."""
        now = time.monotonic() if now is None else now
        out: list[tuple[float, VideoFrame]] = []
        if self.frame is not None and self.received_at is not None:
            out.append((now - self.received_at, self.frame))
        for at, frame in reversed(self.history):
            if frame is not self.frame and now - at <= self._history_s:
                out.append((now - at, frame))
        return out


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size that keeps the aspect ratio with neither side above `max_side` (even sizes,
    never upscaled, at least 2x2)."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def frame_to_rgb(frame: VideoFrame, max_side: int) -> np.ndarray:
    """HxWx3 uint8 RGB, downscaled so neither side exceeds `max_side`. libswscale converts and
    scales in one pass (a 4K frame costs a few ms). Blocking: call it off the event loop."""
    width, height = fit_within(frame.width, frame.height, max_side)
    image: np.ndarray = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    return image


async def drain_video(track: MediaStreamTrack, latest: LatestVideoFrame) -> None:
    """aiortc queues decoded frames without bound until someone reads them: read them all."""
    latest.started = True
    try:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            latest.put(frame, time.monotonic())
    finally:
        latest.ended = True
