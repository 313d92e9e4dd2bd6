"""PCM helpers shared by the pipeline stages."""

from __future__ import annotations

import collections

import numpy as np

PIPELINE_RATE = 16_000  # what VAD and ASR consume
FRAME_MS = 20
FRAME_SAMPLES = PIPELINE_RATE * FRAME_MS // 1000  # 320


def int16_to_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def duration_ms(samples: int, rate: int) -> float:
    return 1000.0 * samples / rate


def take_samples(chunks: collections.deque[np.ndarray], n: int) -> tuple[np.ndarray, int]:
    """The next `n` samples queued in `chunks` (taken off it), zero-padded when fewer are
    queued, and how many were real."""
    out = np.zeros(n, dtype=np.int16)
    filled = 0
    while filled < n and chunks:
        head = chunks[0]
        take = min(n - filled, head.size)
        out[filled:filled + take] = head[:take]
        filled += take
        if take == head.size:
            chunks.popleft()
        else:
            chunks[0] = head[take:]
    return out, filled
