"""espeak-ng: the offline voice for languages with no Piper voice in any registry (Chinese,
German, French, Spanish...). Robotic but intelligible; a real deployment points those
languages at an OpenAI-compatible speech server instead (`openai_speech.py`).

Each sentence is one `espeak-ng --stdout` process, awaited with asyncio (never blocking the
event loop); sentences stream one by one like every other engine.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import time
import wave

import numpy as np

from ..errors import PipelineError
from .base import SynthesizedAudio
from .piper import trim_leading_silence

# callbot voice name -> espeak-ng voice. Debian's `cmn` voice reads the pinyin its dictionary
# gives many characters as English; `cmn-latn-pinyin` reads it as Mandarin.
ESPEAK_VOICES = {
    "espeak-cmn": "cmn-latn-pinyin", "espeak-de": "de", "espeak-fr": "fr-fr",
    "espeak-es": "es", "espeak-en": "en-us",
}


class EspeakError(PipelineError):
    pass


class EspeakSynthesizer:
    def __init__(self, voices: dict[str, str] | None = None, *, words_per_minute: int = 145,
                 timeout_s: float = 10.0, binary: str = "espeak-ng") -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeError(f"{binary} is not installed (apt-get install espeak-ng)")
        self._binary = path
        self._voices = dict(voices or ESPEAK_VOICES)
        self.voices = tuple(self._voices)
        self.words_per_minute = words_per_minute
        self.timeout_s = timeout_s

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        name = voice or self.voices[0]
        if name not in self._voices:
            raise ValueError(f"unknown voice {name!r}")
        started = time.perf_counter()
        if not text.strip():
            return SynthesizedAudio(np.zeros(0, dtype=np.int16), 22_050, 0.0)
        process = await asyncio.create_subprocess_exec(
            self._binary, "-v", self._voices[name], "-s", str(self.words_per_minute),
            "--stdout", "--", text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                out, err = await process.communicate()
        except BaseException:  # timed out or the turn was cancelled: no orphan process
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode != 0:
            raise EspeakError(f"espeak-ng failed ({process.returncode}): {err[:200]!r}")
        pcm, rate = _read_wav(out)
        return SynthesizedAudio(trim_leading_silence(pcm, rate), rate,
                                (time.perf_counter() - started) * 1000)

    def warm_up(self) -> None:
        pass  # a process per sentence: nothing stays warm

    def close(self) -> None:
        pass


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng's --stdout WAV has unknown (0xFFFFFFFF) sizes: read the header, take the rest."""
    if len(data) < 44 or data[:4] != b"RIFF":
        raise EspeakError("espeak-ng gave no WAV audio")
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
    except (wave.Error, EOFError) as exc:
        raise EspeakError(f"espeak-ng gave unreadable audio: {exc}") from exc
    if width != 2 or channels != 1:
        raise EspeakError("espeak-ng audio is not 16-bit mono")
    body = data.find(b"data")
    samples = data[body + 8:] if body >= 0 else b""
    samples = samples[: len(samples) // 2 * 2]
    return np.frombuffer(samples, dtype="<i2").astype(np.int16), rate
