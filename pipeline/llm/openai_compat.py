"""Any OpenAI-compatible `/v1/chat/completions` server, streamed (llama.cpp, vLLM, Ollama,
hosted APIs)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp

from .base import ChatMessage, LLMError


class OpenAICompatibleModel:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = model
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=5)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        body = {
            "model": self.name,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        url = f"{self.base_url}/chat/completions"
        try:
            async with self._client().post(url, json=body, headers=self._headers) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:300]
                    raise LLMError(f"LLM server answered {resp.status}: {detail}")
                async for text in _sse_deltas(resp.content):
                    yield text
        except aiohttp.ClientError as exc:
            raise LLMError(f"LLM server unreachable at {self.base_url}: {exc}") from exc
        except TimeoutError as exc:
            raise LLMError(f"LLM server at {self.base_url} timed out") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _sse_deltas(stream: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Text deltas from a chat-completions server-sent-event stream."""
    async for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError as exc:
            raise LLMError(f"LLM server sent a malformed event: {data[:100]!r}") from exc
        if "error" in event:
            raise LLMError(f"LLM server error: {event['error']}")
        for choice in event.get("choices", []):
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield text
