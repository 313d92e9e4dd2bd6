"""End-of-turn policies: how much silence confirms that the caller has finished.

The session asks the policy at every pause. A policy that judges the audio itself (an
end-of-turn model) declares `uses_audio`; the session then runs `judge_audio` once per pause,
off the event loop, in parallel with the transcription, and passes its verdict back in.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .settings import EndpointingSettings
from .text import turn_completeness


class EndOfTurnPolicy(Protocol):
    name: str
    uses_audio: bool  # declared: judge_audio is only called when True

    async def judge_audio(self, audio: np.ndarray) -> float | None:
        """Probability (0..1) that the speech so far is a finished turn; None if unknown."""
        ...

    def required_silence_ms(self, transcript: str | None, audio_complete: float | None) -> int:
        """Silence after the last word that ends the turn. `transcript` is None until the
        pause has been transcribed; `audio_complete` is judge_audio's verdict, if any."""
        ...


class TranscriptRule:
    """The default: a question ends quickly, a statement a little later, something that
    sounds unfinished ("Hello there.", a trailing "and") only after a long silence."""

    name = "transcript"
    uses_audio = False

    def __init__(self, settings: EndpointingSettings | None = None) -> None:
        self.settings = settings or EndpointingSettings()

    async def judge_audio(self, audio: np.ndarray) -> float | None:
        return None

    def required_silence_ms(self, transcript: str | None, audio_complete: float | None) -> int:
        s = self.settings
        if transcript is None:
            return s.incomplete_end_ms  # not transcribed yet: only a long silence decides
        kind = turn_completeness(transcript)
        return {"question": s.question_end_ms, "statement": s.statement_end_ms}.get(
            kind, s.incomplete_end_ms)
