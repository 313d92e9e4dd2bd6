"""Fit a conversation into the model's context window, always.

Within the documented limits (system prompt, notes, history, context passages, a typed turn)
the sum can be several times a small model's window (SmolLM2: 2048 tokens). `fit_messages`
drops the oldest history first, then shortens the longest remaining message, until the
estimate fits; the system prompt and the turn itself are shortened last.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .llm.base import ChatMessage

PER_MESSAGE_TOKENS = 8  # the chat template's role markers around each message
KEEP_LAST_EXCHANGE = 2  # history messages kept while notes and passages are shortened


def estimate_tokens(text: str, bytes_per_token: float = 2.5) -> int:
    """A conservative guess without the model's tokenizer (English runs ~4 bytes a token)."""
    return math.ceil(len(text.encode("utf-8", "replace")) / bytes_per_token)


def fit_messages(messages: Sequence[ChatMessage], budget_tokens: int,
                 count: Callable[[str], int] = estimate_tokens) -> list[ChatMessage]:
    """`messages` (system first, the turn last) cut to at most `budget_tokens` by `count`."""
    msgs: list[ChatMessage] = [{"role": m["role"], "content": m["content"]} for m in messages]
    sizes = [count(m["content"]) + PER_MESSAGE_TOKENS for m in msgs]

    def total() -> int:
        return sum(sizes)

    # 1. The oldest history goes first (user/assistant turns before the last message), down
    #    to the last exchange; then (2) shortening; then (3) the last exchange too.
    for keep in (KEEP_LAST_EXCHANGE, 0):
        while total() > budget_tokens:
            history = [i for i, m in enumerate(msgs[:-1]) if m["role"] in ("user", "assistant")]
            if len(history) <= keep:
                break
            del msgs[history[0]], sizes[history[0]]
        if keep:
            _shorten(msgs, sizes, budget_tokens, count, keep_whole_prompt=True)
    _shorten(msgs, sizes, budget_tokens, count, keep_whole_prompt=False)
    return [m for k, m in enumerate(msgs) if m["content"] or k in (0, len(msgs) - 1)]


def _shorten(msgs: list[ChatMessage], sizes: list[int], budget_tokens: int,
             count: Callable[[str], int], *, keep_whole_prompt: bool) -> None:
    def total() -> int:
        return sum(sizes)

    # The longest message is shortened (notes, passages; the prompt and the turn last).
    last, first = len(msgs) - 1, 0
    while total() > budget_tokens:
        middle = [i for i in range(len(msgs)) if i not in (first, last) and msgs[i]["content"]]
        pool = middle or ([] if keep_whole_prompt else
                          [i for i in (first, last) if msgs[i]["content"]])
        if not pool:
            break
        i = max(pool, key=lambda k: sizes[k])
        content = msgs[i]["content"]
        excess = total() - budget_tokens
        cut = max(len(content) // 16, excess, 1)  # a few steps, never much over
        msgs[i]["content"] = content[: max(0, len(content) - cut)].rstrip()
        sizes[i] = count(msgs[i]["content"]) + PER_MESSAGE_TOKENS
