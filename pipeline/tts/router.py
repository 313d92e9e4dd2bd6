"""Many synthesizers behind one: the voice name picks the engine (Piper voices, espeak-ng
voices, voices of an OpenAI-compatible speech server)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import SpeechSynthesizer, SynthesizedAudio


class VoiceRouter:
    def __init__(self, engines: Sequence[SpeechSynthesizer]) -> None:
        self._by_voice: dict[str, SpeechSynthesizer] = {}
        for engine in engines:
            for voice in engine.voices:
                self._by_voice.setdefault(voice, engine)
        if not self._by_voice:
            raise ValueError("VoiceRouter needs at least one voice")
        self.engines = list(engines)
        self.voices = tuple(self._by_voice)

    def warm_up(self) -> None:
        for engine in self.engines:
            engine.warm_up()

    def close(self) -> None:
        for engine in self.engines:
            engine.close()

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        name = voice or self.voices[0]
        engine = self._by_voice.get(name)
        if engine is None:
            raise ValueError(f"unknown voice {name!r}")
        return await engine.synthesize(text, voice=name)
