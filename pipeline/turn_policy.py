"""End-of-turn policies: how much silence confirms that the caller has finished.

The session asks the policy at every pause. A policy that judges the audio itself (an
end-of-turn model) declares `uses_audio`; the session then runs `judge_audio` once per pause,
off the event loop, in parallel with the transcription, and passes its verdict back in.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np

from .settings import END_OF_TURN_POLICIES, EndpointingSettings
from .text import turn_completeness

POLICIES = END_OF_TURN_POLICIES


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


class TurnModel(Protocol):
    """An audio end-of-turn model (e.g. `pipeline.smart_turn.SmartTurnModel`)."""

    name: str

    async def predict(self, pcm: np.ndarray) -> float:
        """Probability (0..1) that the speech in `pcm` (16 kHz int16) is a finished turn."""
        ...

    def warm_up(self) -> None: ...

    def close(self) -> None: ...


class SmartTurnPolicy:
    """The transcript rule and an audio end-of-turn model (Smart Turn v3.2), together.

    The transcript says *what* was said (a trailing "and", a greeting on its own, a question
    mark); the audio model hears *how* (falling or level pitch, a drawn-out "so..."). Each
    shortens or lengthens the silence the other would ask for:

    - a transcript that sounds unfinished waits `incomplete_end_ms`, whatever the audio says
      (Smart Turn often hears "Hello there." as finished), except a lone short answer
      ("Yes.", "Okay.") that the model hears as finished: that is a statement;
    - otherwise the wait slides between the transcript rule's short wait (question or
      statement) when the model is sure the turn is over, and `incomplete_end_ms` when it is
      sure it is not: `short + (1 - p) * (incomplete - short)`;
    - before the transcript is ready nothing ends the turn short of `incomplete_end_ms`.

    `audio_only=True` ignores the transcript (as Pipecat uses the model): finished
    (p >= threshold) ends at `audio_end_ms`, anything else waits `incomplete_end_ms`.
    """

    uses_audio = True

    def __init__(self, model: TurnModel, settings: EndpointingSettings | None = None, *,
                 audio_only: bool = False) -> None:
        self.model = model
        self.settings = settings or EndpointingSettings()
        self.audio_only = audio_only
        self.name = "smart_turn_only" if audio_only else "smart_turn"

    async def judge_audio(self, audio: np.ndarray) -> float | None:
        return await self.model.predict(audio)

    def required_silence_ms(self, transcript: str | None, audio_complete: float | None) -> int:
        s = self.settings
        if self.audio_only:
            if audio_complete is not None and audio_complete >= s.turn_model_threshold:
                return s.question_end_ms
            return s.incomplete_end_ms
        if transcript is None:
            return s.incomplete_end_ms
        kind = turn_completeness(transcript)
        p = None if audio_complete is None else min(1.0, max(0.0, audio_complete))
        if kind == "incomplete" and p is not None and p >= 0.5 and is_short_answer(transcript):
            kind = "statement"
        if kind == "incomplete":
            return s.incomplete_end_ms
        short = s.question_end_ms if kind == "question" else s.turn_model_statement_end_ms
        if p is None:  # not judged (yet): the transcript rule alone
            return s.question_end_ms if kind == "question" else s.statement_end_ms
        return int(short + (1.0 - p) * (s.incomplete_end_ms - short))


_SHORT_ANSWER = re.compile(
    r"^(yes|yeah|yep|no|nope|okay|ok|sure|right|correct|exactly|fine)"
    r"( please| thanks| thank you)?[.!]*$", re.I)


def is_short_answer(transcript: str) -> bool:
    """A complete answer of one or two words ("Yes.", "Okay.", "No thanks.")."""
    return bool(_SHORT_ANSWER.match(transcript.strip().rstrip(",")))


def default_policy(settings: EndpointingSettings, model: TurnModel | None) -> EndOfTurnPolicy:
    """The policy `settings.policy` names; the transcript rule when no turn model is loaded."""
    if settings.policy == "transcript" or model is None:
        return TranscriptRule(settings)
    return SmartTurnPolicy(model, settings, audio_only=settings.policy == "smart_turn_only")
