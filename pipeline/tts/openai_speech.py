"""Any OpenAI-compatible `/v1/audio/speech` server (what a real deployment points non-English
languages, or every language, at for natural voices). The response is read as it streams
(raw 24 kHz 16-bit PCM, `response_format: "pcm"`), one request per sentence."""

from __future__ import annotations

import time

import aiohttp
import numpy as np

from ..errors import PipelineError
from ..remote_http import RemoteClient
from .base import SynthesizedAudio

OPENAI_PCM_RATE = 24_000


class SpeechServerError(PipelineError):
    pass


class OpenAISpeechSynthesizer:
    """`voices`: callbot voice name -> the server's voice name, e.g.
    {"openai-alloy": "alloy"}."""

    def __init__(self, base_url: str, voices: dict[str, str], *, model: str = "tts-1",
                 api_key: str | None = None, timeout_s: float = 10.0,
                 sample_rate: int = OPENAI_PCM_RATE) -> None:
        if not voices:
            raise ValueError("OpenAISpeechSynthesizer needs at least one voice")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._voices = dict(voices)
        self.voices = tuple(voices)
        self.sample_rate = sample_rate
        self._client = RemoteClient.for_server(base_url, api_key=api_key, timeout_s=timeout_s,
                                               connect_timeout_s=3.0)

    async def synthesize(self, text: str, *, voice: str | None = None) -> SynthesizedAudio:
        name = voice or self.voices[0]
        if name not in self._voices:
            raise ValueError(f"unknown voice {name!r}")
        started = time.perf_counter()
        body = {"model": self.model, "input": text, "voice": self._voices[name],
                "response_format": "pcm"}
        chunks: list[bytes] = []
        try:
            async with self._client.post("/audio/speech", json=body) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:200]
                    raise SpeechServerError(f"speech server answered {resp.status}: {detail}")
                async for chunk in resp.content.iter_chunked(8192):
                    chunks.append(chunk)
        except aiohttp.ClientError as exc:
            raise SpeechServerError(f"speech server unreachable at {self.base_url}: {exc}"
                                    ) from exc
        except TimeoutError as exc:
            raise SpeechServerError(f"speech server at {self.base_url} timed out") from exc
        raw = b"".join(chunks)
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.int16)
        return SynthesizedAudio(pcm, self.sample_rate, (time.perf_counter() - started) * 1000)

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        self._client.close()
