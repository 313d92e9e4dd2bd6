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

    name: str
    languages: tuple[str, ...] | None  # what it can recognise; None: any (multilingual)

    @property
    def busy(self) -> bool:
        """A final transcription is queued or running: partial previews should wait."""
        ...

    def warm_up(self) -> None:
        """Run once at start-up (blocking) so the first caller does not pay for cold caches."""
        ...

    def close(self) -> None: ...

    async def transcribe(
        self, pcm: np.ndarray, *, language: str | None = None, partial: bool = False,
        prompt: str | None = None,
    ) -> Transcript:
        """`partial=True` marks a best-effort preview: engines may queue it behind finals.
        `prompt`: the conversation just before this audio (e.g. the bot's last question), a
        hint for likely words; engines that cannot use it ignore it."""
        ...
