"""TTS on an inference server: OpenAI-compatible `POST /v1/audio/speech`, streamed raw PCM.

`response_format: "pcm"` is 16-bit little-endian mono; its rate is the `X-Sample-Rate`
header when the server sends one (`callbot engines serve` does) and 24 kHz otherwise (what
OpenAI's API sends). Retries never make the bot say a sentence twice: an attempt is repeated
only when no audio byte of it has arrived; a stream that breaks after its first byte is an
error for this sentence (the turn reports it), never a second copy.
"""

from __future__ import annotations

import json
import time
import urllib.request

import aiohttp
import numpy as np

from ..errors import RemoteEngineError
from ..remote_http import RETRY_STATUSES, RemoteClient, RemoteSettings, describe, error_text
from .base import SynthesizedAudio

OPENAI_PCM_RATE = 24_000


class RemoteSynthesizer:
    """`SpeechSynthesizer` whose model runs on another machine."""

    def __init__(self, settings: RemoteSettings, *, model: str = "tts-1",
                 voices: tuple[str, ...] = (), default_voice: str | None = None) -> None:
        self.settings = settings
        self.model = model
        self.voices: tuple[str, ...] = voices
        self.default_voice = default_voice
        self._client = RemoteClient(settings)
        self.requests = 0  # HTTP attempts made (retries included)

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        started = time.perf_counter()
        url = self.settings.url("/audio/speech")
        payload: dict[str, object] = {"model": self.model, "input": text,
                                      "response_format": "pcm"}
        chosen = voice or self.default_voice or (self.voices[0] if self.voices else None)
        if chosen is not None:
            payload["voice"] = chosen
        last = "no attempt"
        for attempt in range(self.settings.retries + 1):
            if attempt:
                await self._client.backoff(attempt - 1)
            self.requests += 1
            received = bytearray()
            rate = OPENAI_PCM_RATE
            try:
                async with self._client.session().post(url, json=payload) as response:
                    if response.status != 200:
                        last = await error_text(response)
                        if response.status in RETRY_STATUSES:
                            continue
                        raise RemoteEngineError(f"TTS server {url}: {last}")
                    rate = int(response.headers.get("X-Sample-Rate", OPENAI_PCM_RATE))
                    async for chunk in response.content.iter_any():
                        received += chunk
            except (TimeoutError, aiohttp.ClientError) as exc:
                if received:  # some audio came: repeating would speak it twice
                    raise RemoteEngineError(
                        f"TTS server {url}: stream broke after {len(received)} bytes "
                        f"({describe(exc)}); not retried") from None
                last = describe(exc)
                continue
            usable = len(received) - len(received) % 2
            return SynthesizedAudio(
                pcm=np.frombuffer(bytes(received[:usable]), dtype="<i2").astype(np.int16),
                sample_rate=rate,
                compute_ms=(time.perf_counter() - started) * 1000,
            )
        raise RemoteEngineError(
            f"TTS server {url} failed after {self.settings.retries + 1} attempts: {last}")

    def warm_up(self) -> None:
        """Blocking, at start-up: learn the server's voices when it lists them.

        `GET /v1/audio/voices` is what `callbot engines serve` answers (not part of OpenAI's
        API); other servers keep the voices given in the settings.
        """
        if self.voices:
            return
        try:
            request = urllib.request.Request(self.settings.url("/audio/voices"))
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                data = json.loads(response.read())
            voices = tuple(str(v) for v in data.get("voices", ()))
        except (OSError, ValueError) as exc:
            raise RemoteEngineError(
                f"TTS server {self.settings.base_url}: cannot list voices ({exc}); set "
                "engines.tts_voice to a voice that server has") from exc
        if not voices:
            raise RemoteEngineError(f"TTS server {self.settings.base_url} lists no voices")
        self.voices = voices

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        await self._client.aclose()
