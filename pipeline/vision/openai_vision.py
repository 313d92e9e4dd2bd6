"""Vision through any OpenAI-compatible multimodal chat endpoint (vLLM, llama.cpp's server
with a vision projector, Ollama, hosted APIs): the frame goes as a JPEG data URL in an
`image_url` content part of `/v1/chat/completions`; the model's description of it becomes
the scene note for the conversation's LLM."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import aiohttp
import numpy as np

from ..errors import EngineError
from ..remote_http import RemoteClient
from .base import SceneReading
from .frames import to_jpeg

log = logging.getLogger(__name__)

VISION_PROMPT = (
    "You describe a live camera frame for a voice assistant on a call. In at most three short "
    "sentences, say what is in the picture, most relevant to the caller's question first. "
    "Copy any visible text exactly, in quotes. Say so plainly if the picture is dark, blurred "
    "or empty. Never guess what you cannot see."
)


class OpenAIVision:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 max_side: int = 960, timeout_s: float = 20.0, max_tokens: int = 200) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = f"openai:{model}"
        self.model = model
        self.max_side = max_side
        self.max_tokens = max_tokens
        self._client = RemoteClient.for_server(base_url, api_key=api_key, timeout_s=timeout_s)
        self._inflight = 0

    @property
    def busy(self) -> bool:
        return self._inflight > 0

    def warm_up(self) -> None:
        """Nothing to load; the endpoint is checked by the first turn that looks."""

    def close(self) -> None:
        self._client.close()

    def request_body(self, jpeg: bytes, question: str) -> dict[str, Any]:
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": VISION_PROMPT},
                {"role": "user", "content": [
                    {"type": "text", "text": f"The caller asks: {question}"},
                    {"type": "image_url", "image_url": {"url": url}},
                ]},
            ],
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": False,
        }

    async def describe(self, image: np.ndarray, *, question: str,
                       language: str | None = None) -> SceneReading:
        jpeg = await asyncio.to_thread(to_jpeg, image)  # encoding is CPU work: off the loop
        body = self.request_body(jpeg, question)
        self._inflight += 1
        try:
            async with self._client.post("/chat/completions", json=body) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:200]
                    raise EngineError(f"vision endpoint answered {resp.status}: {detail}")
                data = await resp.json()
        except aiohttp.ClientError as exc:
            raise EngineError(f"vision endpoint unreachable: {exc}") from exc
        finally:
            self._inflight -= 1
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise EngineError("vision endpoint sent no message content") from exc
        text = str(content or "").strip()
        if not text:
            return SceneReading(note="The vision model said nothing about the picture.",
                                usable=False)
        return SceneReading(note=f"A vision model looked at the camera picture: {text}")
