"""The knowledge base as a `ContextSource`: each turn, the caller's words retrieve passages
that go into the LLM's prompt, within a passage count and a token budget.

Retrieval runs on a worker thread (embedding the query and the searches are blocking). Only
passages similar enough to the question count: when none is, the notes say so explicitly,
and the system prompt tells the model to say it does not know rather than guess.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..augment import TurnContext, TurnRequest
from .index import DEFAULT_MAX_QUERY_TOKENS, KnowledgeBase, SearchBudget, SearchHit

NOTHING_FOUND = "Nothing in the documents matches this question."

KNOWLEDGE_INSTRUCTIONS = (
    " You answer questions about this business from its documents. When a message gives "
    "passages from the documents, answer only from them and name the document you used, "
    "e.g. \"According to the returns policy, ...\". If it says nothing in the documents "
    "matches, say you do not know that and offer to help with something else. Never invent "
    "prices, times or rules."
)


@dataclass(frozen=True)
class Passage:
    """A piece of text an app supplies for a turn (e.g. from its own database)."""

    text: str
    source: str  # named to the caller, e.g. "the returns policy"


PassageProvider = Callable[[str], Sequence[Passage] | Awaitable[Sequence[Passage]]]


def estimate_tokens(text: str) -> int:
    """About 4 characters per token for English (good enough for a budget)."""
    return max(1, (len(text) + 3) // 4)


def format_passages(passages: Sequence[Passage], *, max_passages: int,
                    token_budget: int) -> str:
    lines: list[str] = []
    used = 0
    for passage in passages[:max_passages]:
        line = f"[{len(lines) + 1}] From \"{passage.source}\": {passage.text.strip()}"
        cost = estimate_tokens(line)
        if lines and used + cost > token_budget:
            break
        if not lines and cost > token_budget:  # always give the best one, cut to the budget
            line = line[: token_budget * 4].rsplit(" ", 1)[0] + " ..."
            cost = token_budget
        lines.append(line)
        used += cost
    return "\n".join(lines)


class KnowledgeSource:
    """Passages from a `KnowledgeBase` for every turn (a `ContextSource`)."""

    name = "knowledge"
    label = "From the documents"

    def __init__(self, kb: KnowledgeBase, *, passages: int = 3, token_budget: int = 300,
                 min_similarity: float = 0.84, rare_word_similarity: float = 0.75,
                 margin: float = 0.03, timeout_s: float = 2.0,
                 max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS) -> None:
        self.kb = kb
        self.max_query_tokens = max_query_tokens
        self.passages = passages
        self.token_budget = token_budget
        self.min_similarity = min_similarity
        self.rare_word_similarity = rare_word_similarity
        self.margin = margin
        self.timeout_s = timeout_s

    def relevant(self, query: str, budget: SearchBudget | None = None) -> list[SearchHit]:
        """Blocking: the best hits that are about the question. A passage counts when its
        meaning is close enough (`min_similarity`), or a little less close but it holds a
        rare word of the question (a name, a product: `rare_word_similarity`). Passages much
        less similar than the best one (by more than `margin`) are left out: a small model
        mixes up the numbers of passages it does not need."""
        hits = self.kb.search(query, limit=max(self.passages, 1),
                              max_query_tokens=self.max_query_tokens, budget=budget)
        found = [h for h in hits if h.similarity >= self.min_similarity
                 or (h.rare_match and h.similarity >= self.rare_word_similarity)]
        if not found:
            return []
        best = max(h.similarity for h in found)
        return [h for h in found if h.similarity >= best - self.margin]

    async def context_for(self, request: TurnRequest) -> TurnContext | None:
        if not request.text.strip():
            return None
        started = time.perf_counter()
        # The turn's timeout cancels this await; the budget makes the worker thread stop
        # too (at its next checkpoint) instead of searching on for nobody.
        budget = SearchBudget.within(self.timeout_s)
        try:
            hits = await asyncio.to_thread(self.relevant, request.text, budget)
        finally:
            budget.cancel()
        elapsed = (time.perf_counter() - started) * 1000
        if not hits:
            return TurnContext(notes=NOTHING_FOUND, timings={"retrieval_ms": elapsed})
        notes = format_passages([Passage(h.text, h.title) for h in hits],
                                max_passages=self.passages, token_budget=self.token_budget)
        return TurnContext(notes=notes, timings={"retrieval_ms": elapsed})


class ProvidedPassages:
    """Passages an app supplies per turn from its own systems (a `ContextSource`):

        CallOptions(context_sources=(ProvidedPassages(lookup_faq),))

    `provider(text)` gets the caller's words and returns `Passage`s (or awaits them); a
    blocking provider should do its work in a thread itself.
    """

    name = "passages"
    label = "From the documents"

    def __init__(self, provider: PassageProvider, *, passages: int = 3, token_budget: int = 300,
                 timeout_s: float = 2.0) -> None:
        self.provider = provider
        self.passages = passages
        self.token_budget = token_budget
        self.timeout_s = timeout_s

    async def context_for(self, request: TurnRequest) -> TurnContext | None:
        started = time.perf_counter()
        result = self.provider(request.text)
        if isinstance(result, Awaitable):
            result = await result
        elapsed = (time.perf_counter() - started) * 1000
        if not result:
            return TurnContext(notes=NOTHING_FOUND, timings={"retrieval_ms": elapsed})
        notes = format_passages(list(result), max_passages=self.passages,
                                token_budget=self.token_budget)
        return TurnContext(notes=notes, timings={"retrieval_ms": elapsed})
