"""What the recognizer is told about the conversation before the caller's audio."""

from __future__ import annotations

from collections.abc import Sequence

from ..llm.base import ChatMessage

PROMPT_MAX_CHARS = 200


def asr_prompt(history: Sequence[ChatMessage], history_len: int) -> str | None:
    """The bot's last words before this turn (its question makes the answer's words likely),
    or None at the start of a call. Only the bot's words: a misheard caller turn would
    reinforce its own mistake."""
    for message in reversed(history[:history_len]):
        if message["role"] == "assistant":
            text = " ".join(str(message["content"]).split())
            return text[-PROMPT_MAX_CHARS:] or None
        if message["role"] == "system":
            return None
    return None
