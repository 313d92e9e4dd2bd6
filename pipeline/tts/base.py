"""The TTS engine interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class SynthesizedAudio:
    pcm: np.ndarray  # int16 mono
    sample_rate: int
    compute_ms: float

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.sample_rate


class SpeechSynthesizer(Protocol):
    voices: tuple[str, ...]  # the names a call may choose from

    def warm_up(self) -> None:
        """Blocking, once at start-up."""
        ...

    def close(self) -> None: ...

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        """Speak one sentence (or clause), off the event loop."""
        ...
