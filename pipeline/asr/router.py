"""One recognizer for many languages: English on the fast English-only model, every other
language (and detection) on the multilingual one."""

from __future__ import annotations

import numpy as np

from .base import SpeechRecognizer, Transcript
from .whisper import FasterWhisperRecognizer


class LanguageRouter:
    """English calls go to `english` (tiny.en: about twice as fast as base); any other
    language, and a call whose language is not known yet, to `multilingual` (base), which
    detects it among `among` (the server's allowed languages) when none is given."""

    def __init__(self, english: SpeechRecognizer | None, multilingual: FasterWhisperRecognizer,
                 *, among: tuple[str, ...] | None = None) -> None:
        self.english = english
        self.multilingual = multilingual
        self.among = among
        self.name = f"{english.name}+{multilingual.name}" if english else multilingual.name
        self.languages: tuple[str, ...] | None = among

    def restricted(self, among: tuple[str, ...]) -> LanguageRouter:
        """The same models, detecting only among `among` (cheap: per app)."""
        return LanguageRouter(self.english, self.multilingual, among=among)

    @property
    def busy(self) -> bool:
        return self.multilingual.busy or (self.english is not None and self.english.busy)

    def warm_up(self) -> None:
        if self.english is not None:
            self.english.warm_up()
        self.multilingual.warm_up()

    def close(self) -> None:
        if self.english is not None:
            self.english.close()
        self.multilingual.close()

    async def transcribe(
        self, pcm: np.ndarray, *, language: str | None = None, partial: bool = False,
        prompt: str | None = None,
    ) -> Transcript:
        if language == "en" and self.english is not None:
            return await self.english.transcribe(pcm, language="en", partial=partial,
                                                 prompt=prompt)
        return await self.multilingual.transcribe(
            pcm, language=language, partial=partial, prompt=prompt, among=self.among)
