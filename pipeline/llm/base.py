"""The LLM engine interface: stream a chat reply as text deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypedDict


class ChatMessage(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class LLMError(RuntimeError):
    """The model or its server failed; the message is safe to show to the caller."""


class LanguageModel(Protocol):
    name: str

    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        """Yield the reply as it is generated. Closing the iterator stops generation."""
        ...
