"""ASR on an inference server: OpenAI-compatible `POST /v1/audio/transcriptions`.

Works with `callbot engines serve`, vLLM, faster-whisper-server/speaches and OpenAI itself.
The utterance is sent as a 16 kHz mono WAV file; a transcription has no side effect, so a
failed attempt (connection error, timeout, 408/429/5xx) is repeated up to `retries` times.
"""

from __future__ import annotations

import io
import time
import wave

import aiohttp
import numpy as np

from ..audio import PIPELINE_RATE
from ..errors import RemoteEngineError
from ..remote_http import RETRY_STATUSES, RemoteClient, RemoteSettings, describe, error_text
from .base import Transcript


def wav_bytes(pcm: np.ndarray, sample_rate: int = PIPELINE_RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(pcm, dtype=np.int16).tobytes())
    return buf.getvalue()


class RemoteRecognizer:
    """`SpeechRecognizer` whose model runs on another machine."""

    def __init__(self, settings: RemoteSettings, model: str = "tiny.en", *,
                 languages: tuple[str, ...] | None = ("en",)) -> None:
        self.name = f"remote:{model}"
        self.model = model
        self.languages = languages
        self.settings = settings
        self._client = RemoteClient(settings)
        self._finals = 0  # final transcriptions in flight
        self.requests = 0  # HTTP attempts made (retries included)

    @property
    def busy(self) -> bool:
        return self._finals > 0

    async def transcribe(self, pcm: np.ndarray, *, language: str | None = None,
                         partial: bool = False, prompt: str | None = None) -> Transcript:
        if not partial:
            self._finals += 1
        try:
            return await self._transcribe(pcm, language, prompt)
        finally:
            if not partial:
                self._finals -= 1

    async def _transcribe(self, pcm: np.ndarray, language: str | None, prompt: str | None
                          ) -> Transcript:
        started = time.perf_counter()
        body = wav_bytes(pcm)
        url = self.settings.url("/audio/transcriptions")
        last = "no attempt"
        for attempt in range(self.settings.retries + 1):
            if attempt:
                await self._client.backoff(attempt - 1)
            form = aiohttp.FormData()
            form.add_field("file", body, filename="utterance.wav", content_type="audio/wav")
            form.add_field("model", self.model)
            form.add_field("response_format", "json")
            if language:
                form.add_field("language", language)
            if prompt:  # OpenAI's field: a hint of likely words
                form.add_field("prompt", prompt)
            self.requests += 1
            try:
                async with self._client.session().post(url, data=form) as response:
                    if response.status != 200:
                        last = await error_text(response)
                        if response.status in RETRY_STATUSES:
                            continue
                        raise RemoteEngineError(f"ASR server {url}: {last}")
                    data = await response.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = describe(exc)
                continue
            if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                raise RemoteEngineError(f"ASR server {url}: answer has no 'text'")
            lang = data.get("language")
            return Transcript(
                text=data["text"].strip(),
                language=lang if isinstance(lang, str) else language,
                compute_ms=(time.perf_counter() - started) * 1000,
                audio_ms=len(pcm) / PIPELINE_RATE * 1000,
            )
        raise RemoteEngineError(
            f"ASR server {url} failed after {self.settings.retries + 1} attempts: {last}")

    def warm_up(self) -> None:
        """Nothing to load here; the server warms its own model."""

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        await self._client.aclose()
