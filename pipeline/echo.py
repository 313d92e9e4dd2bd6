"""Server-side echo cancellation: the bot's own voice, coming back through a caller's
speakerphone, taken out of the caller's audio before VAD and ASR.

callbot holds both signals: what it sent (the far end: `far()`, called with every frame the
paced output track sent, silence included, so the two streams keep step) and what it hears
(`near()`, each 20 ms frame of the caller's audio). WebRTC's AEC3 (`pywebrtc-audio`) finds the
delay between them itself (the line's round trip plus the caller's loudspeaker) and subtracts
the echo; a caller talking over the bot passes through.
"""

from __future__ import annotations

import collections
import time

import numpy as np

from .audio import PIPELINE_RATE

AEC_CHUNK = PIPELINE_RATE // 100  # AEC3 works on 10 ms blocks
# Far-end audio kept waiting for its near-end partner: more than this and the oldest goes
# (the caller's audio stalled); AEC3 estimates delays well within it.
MAX_FAR_BACKLOG = PIPELINE_RATE // 2


class EchoCanceller:
    """One call's AEC3. Not thread-safe: `far` and `near` run on the call's event loop."""

    def __init__(self, *, stream_delay_ms: int = 0) -> None:
        from pywebrtc_audio import EchoCanceller as Aec3  # optional dependency, loaded per call

        self._aec = Aec3(sample_rate=PIPELINE_RATE, num_channels=1,
                         stream_delay_ms=stream_delay_ms)
        self._far: collections.deque[np.ndarray] = collections.deque()
        self._far_queued = 0
        self.cpu_s = 0.0  # time spent in AEC3 (reported by bench.echo)
        self.frames = 0

    def far(self, pcm: np.ndarray, rate: int = PIPELINE_RATE) -> None:
        """What the bot sent just now, mono int16 at `rate` (silence included)."""
        if rate != PIPELINE_RATE and pcm.size:
            pcm = _to_pipeline_rate(pcm, rate)
        if pcm.size:
            self._far.append(pcm.astype(np.int16, copy=False))
            self._far_queued += pcm.size
        while self._far_queued > MAX_FAR_BACKLOG and self._far:
            self._far_queued -= self._far.popleft().size

    def _take_far(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and self._far:
            head = self._far[0]
            take = min(n - filled, head.size)
            out[filled:filled + take] = head[:take]
            filled += take
            if take == head.size:
                self._far.popleft()
            else:
                self._far[0] = head[take:]
        self._far_queued -= filled
        return out

    def near(self, frame: np.ndarray) -> np.ndarray:
        """One frame of the caller's audio (16 kHz mono int16), the bot's echo taken out."""
        started = time.perf_counter()
        far = self._take_far(frame.size)
        out = np.empty_like(frame)
        for i in range(0, frame.size - AEC_CHUNK + 1, AEC_CHUNK):
            out[i:i + AEC_CHUNK] = self._aec.process(
                np.ascontiguousarray(frame[i:i + AEC_CHUNK]),
                np.ascontiguousarray(far[i:i + AEC_CHUNK]))
        self.cpu_s += time.perf_counter() - started
        self.frames += 1
        return out


def _to_pipeline_rate(pcm: np.ndarray, rate: int) -> np.ndarray:
    """48 kHz -> 16 kHz by averaging threes (a crude low-pass is enough for a reference the
    adaptive filter matches anyway); other rates by linear interpolation."""
    if rate % PIPELINE_RATE == 0:
        step = rate // PIPELINE_RATE
        usable = pcm.size - pcm.size % step
        out: np.ndarray = pcm[:usable].reshape(-1, step).mean(axis=1).astype(np.int16)
        return out
    n = round(pcm.size * PIPELINE_RATE / rate)
    x = np.linspace(0, pcm.size - 1, n)
    resampled: np.ndarray = np.interp(x, np.arange(pcm.size), pcm).astype(np.int16)
    return resampled


def available() -> bool:
    """pywebrtc-audio is installed."""
    try:
        import pywebrtc_audio  # noqa: F401
    except ImportError:
        return False
    return True

