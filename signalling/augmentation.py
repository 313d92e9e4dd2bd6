"""What a call adds to its conversation besides the caller's words: the server's knowledge
base, the app's own passages and context sources, and the caller's memory."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from callbot.pipeline.augment import ContextSource
from callbot.pipeline.memory import valid_caller_id

from .auth import Principal
from .call import CallOptions

if TYPE_CHECKING:
    from .state import AppState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallExtras:
    options: CallOptions  # with the knowledge instructions added to the system prompt
    sources: tuple[ContextSource, ...]
    caller_id: str | None  # set when this call's caller is remembered
    memory: str | None  # what is remembered of earlier calls


async def call_extras(state: AppState, options: CallOptions, principal: Principal) -> CallExtras:
    from callbot.pipeline.knowledge.source import (
        KNOWLEDGE_INSTRUCTIONS,
        KnowledgeSource,
        ProvidedPassages,
    )

    settings = state.config.knowledge
    sources: list[ContextSource] = []
    if state.knowledge is not None and options.knowledge:
        sources.append(KnowledgeSource(
            state.knowledge, passages=settings.passages, token_budget=settings.token_budget,
            min_similarity=settings.min_similarity, timeout_s=settings.timeout_s))
    if options.passages is not None:
        sources.append(ProvidedPassages(options.passages, passages=settings.passages,
                                        token_budget=settings.token_budget,
                                        timeout_s=settings.timeout_s))
    if sources:
        prompt = options.system_prompt or state.config.turn.reply.system_prompt
        options = dataclasses.replace(options, system_prompt=prompt + KNOWLEDGE_INSTRUCTIONS)
    sources.extend(options.context_sources)
    caller_id: str | None = None
    memory: str | None = None
    if state.memory is not None and options.memory:
        caller_id = options.caller_id
        if caller_id is None and principal.kind == "call_token":
            caller_id = principal.subject
        if caller_id is not None and not valid_caller_id(caller_id):
            log.warning("memory: caller id %r is not usable; this call is not remembered",
                        caller_id[:40])
            caller_id = None
        if caller_id is not None:
            memory = await state.memory.context_for(caller_id)
    return CallExtras(options, tuple(sources), caller_id, memory)


def knowledge_prompt(state_prompt: str, knowledge_on: bool) -> str:
    """The system prompt the server warms the LLM with (its prefix stays cached)."""
    from callbot.pipeline.knowledge.source import KNOWLEDGE_INSTRUCTIONS

    return state_prompt + KNOWLEDGE_INSTRUCTIONS if knowledge_on else state_prompt
