"""The LLM engine interface: stream a chat reply as text deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TypedDict

from ..errors import LLMError as LLMError
from .tools import Tool


class ChatMessage(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class LanguageModel(Protocol):
    name: str
    supports_tools: bool  # declared: `tools` are only passed to models that can call them

    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float,
        tools: Sequence[Tool] = (),
    ) -> AsyncIterator[str]:
        """Yield the reply as it is generated. Closing the iterator stops generation."""
        ...

    def warm_up(self, system_prompt: str) -> None:
        """Blocking, once at start-up: evaluate the system prompt so its state is cached."""
        ...

    async def close(self) -> None: ...
