"""The ASR engine interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    compute_ms: float  # wall time the engine spent on this transcription
    audio_ms: float


class SpeechRecognizer(Protocol):
    """Transcribes a whole utterance of 16 kHz mono int16 audio, off the event loop."""

    async def transcribe(
        self, pcm: np.ndarray, *, language: str | None = None, partial: bool = False
    ) -> Transcript:
        """`partial=True` marks a best-effort preview: engines may queue it behind finals."""
        ...
