"""PCM helpers shared by the pipeline stages."""

from __future__ import annotations

import numpy as np

PIPELINE_RATE = 16_000  # what VAD and ASR consume
FRAME_MS = 20
FRAME_SAMPLES = PIPELINE_RATE * FRAME_MS // 1000  # 320


def int16_to_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def duration_ms(samples: int, rate: int) -> float:
    return 1000.0 * samples / rate
