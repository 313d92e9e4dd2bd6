"""Context sources: what a turn may add to the LLM's prompt besides the conversation.

Knowledge-base passages, what the camera shows, the caller's remembered history: each is a
`ContextSource`. Before the LLM is asked (already during speculation, so it overlaps the
end-of-turn wait), the session asks every source for the turn, concurrently, and puts what
they return into the prompt as quoted data between delimiters, with any instructions in it
taken out and flagged (`safety.flagged`, source "context": pipeline/safety/injection.py). A
source that fails or is slower than its budget is skipped for that turn; the call goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .events import Event, SafetyFlagged
from .safety.injection import Neutralised, quote_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnRequest:
    text: str  # the caller's words for this turn (with any carried-over words)
    language: str | None
    look: bool = False  # the caller asked to use the picture (typed turn with "look": true)


@dataclass
class TurnContext:
    notes: str  # data for the LLM; the session labels it with the source's `label`
    timings: dict[str, float] = field(default_factory=dict)  # e.g. {"retrieval_ms": 12.0}
    events: list[Event] = field(default_factory=list)  # sent once the turn is confirmed


class ContextSource(Protocol):
    name: str
    label: str  # how the notes are introduced to the model, e.g. "From the documents"
    timeout_s: float  # a source that takes longer is skipped for this turn

    async def context_for(self, request: TurnRequest) -> TurnContext | None: ...


MAX_NOTES_CHARS = 32_000  # one source's notes for one turn (more never fits a prompt)


@dataclass
class GatheredContext:
    blocks: list[str]  # one labelled block of notes per source that had something
    timings: dict[str, float]
    events: list[Event]


async def gather_context(sources: Sequence[ContextSource],
                         request: TurnRequest) -> GatheredContext:
    """Ask every source concurrently, each within its own timeout; failures are skipped."""

    async def ask(source: ContextSource) -> TurnContext | None:
        try:
            async with asyncio.timeout(source.timeout_s):
                return await source.context_for(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failing or slow source costs its notes, not the turn
            log.warning("context source %s failed or timed out", source.name, exc_info=True)
            return None

    results = await asyncio.gather(*(ask(s) for s in sources))
    gathered = GatheredContext([], {}, [])
    for source, result in zip(sources, results, strict=True):
        if result is None:
            continue
        gathered.timings.update(result.timings)
        gathered.events.extend(result.events)
        if result.notes.strip():
            # Documents, app passages, what the camera reads: anyone may have written them,
            # so they are quoted between delimiters with any instructions taken out. About
            # 7 µs a character: long notes (an app's own source) are done on a thread.
            notes = result.notes[:MAX_NOTES_CHARS]
            if len(notes) > 2000:
                block, found = await asyncio.to_thread(quote_context, source.label, notes)
            else:
                block, found = quote_context(source.label, notes)
            gathered.blocks.append(block)
            if found.flagged:
                log.warning("context source %s: instructions neutralised (%s)", source.name,
                            ",".join(found.findings))
                gathered.events.append(injection_event(source.name, found))
    return gathered


def injection_event(source_name: str, found: Neutralised) -> SafetyFlagged:
    return SafetyFlagged(source="context", categories=("prompt_injection",),
                         action="neutralised", context=source_name)
