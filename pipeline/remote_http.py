"""The one client every remote engine speaks OpenAI's HTTP protocol through: ASR, TTS
(`/audio/*`), the LLM and vision (`/chat/completions`), moderation (`/moderations`).

One `aiohttp.ClientSession` per engine (connection reuse, reopened in a new event loop), the
bearer key, a timeout per request, and a retry policy (ASR, TTS) that only repeats requests
whose effect was never used: a transcription is idempotent, a synthesis is retried
only while not one byte of its audio has arrived.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from .errors import RemoteEngineError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RemoteSettings:
    base_url: str  # e.g. http://models:9000/v1
    timeout_s: float = 10.0  # one request, connect to last byte
    connect_timeout_s: float = 2.0
    retries: int = 2  # extra attempts after a failure nothing was used from
    retry_backoff_s: float = 0.1  # doubled each attempt
    api_key: str | None = None
    max_connections: int = 64

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path


class RemoteClient:
    """Lazily opened client session (it must be made inside the event loop that uses it)."""

    def __init__(self, settings: RemoteSettings) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_server(cls, base_url: str, *, api_key: str | None, timeout_s: float,
                   connect_timeout_s: float = 5.0) -> RemoteClient:
        return cls(RemoteSettings(base_url=base_url, api_key=api_key, timeout_s=timeout_s,
                                  connect_timeout_s=min(connect_timeout_s, timeout_s)))

    def post(self, path: str, **kwargs: Any) -> Any:
        """`async with client.post("/chat/completions", json=...) as response:`"""
        return self.session().post(self.settings.url(path), **kwargs)

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            s = self.settings
            headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=s.timeout_s, sock_connect=s.connect_timeout_s),
                connector=aiohttp.TCPConnector(limit=s.max_connections),
            )
            self._loop = loop
        return self._session

    async def backoff(self, attempt: int) -> None:
        await asyncio.sleep(self.settings.retry_backoff_s * (2 ** attempt))

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def close(self) -> None:
        """Best effort from sync code (engine `close()`): schedule the session's close."""
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        try:
            asyncio.get_running_loop().create_task(session.close())
        except RuntimeError:  # no loop running: the connector is dropped with the session
            pass


async def error_text(response: aiohttp.ClientResponse) -> str:
    """A short description of an error answer (the server's JSON message when it sent one)."""
    try:
        body = await response.text()
    except Exception:
        body = ""
    return f"HTTP {response.status}: {body[:200].strip() or response.reason}"


def describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


__all__ = ["RETRY_STATUSES", "RemoteClient", "RemoteEngineError", "RemoteSettings",
           "describe", "error_text"]
