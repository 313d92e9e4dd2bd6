"""Sample-rate conversion between WebRTC (48 kHz) and the pipeline, on numpy int16."""

from __future__ import annotations

import numpy as np
from av import AudioFrame
from av.audio.resampler import AudioResampler


def frame_to_mono(frame: AudioFrame, resampler: AudioResampler) -> np.ndarray:
    """One decoded WebRTC frame (aiortc gives packed s16 stereo at 48 kHz) through a
    long-lived resampler to int16 mono at the resampler's rate."""
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    if not out:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(out).astype(np.int16, copy=False)


def mono_resampler(rate: int) -> AudioResampler:
    return AudioResampler(format="s16", layout="mono", rate=rate)


def resample_pcm(pcm: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """A whole chunk (e.g. one synthesized sentence), flushed: nothing is held back."""
    if in_rate == out_rate or pcm.size == 0:
        return pcm.astype(np.int16, copy=False)
    frame = AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = in_rate
    resampler = mono_resampler(out_rate)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.int16, copy=False) if parts else pcm[:0]


class Rechunker:
    """Cuts a stream of int16 arrays into fixed-size frames."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pending = np.zeros(0, dtype=np.int16)

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        data = np.concatenate((self._pending, pcm)) if self._pending.size else pcm
        n = len(data) // self.size
        frames = [data[i * self.size : (i + 1) * self.size] for i in range(n)]
        self._pending = data[n * self.size :].copy()
        return frames
