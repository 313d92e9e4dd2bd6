"""Caller memory in a call's life: a known caller's notes go into their call, and a note of
the call is written when it ends (in the background, off the event loop)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from callbot.pipeline.engines import Engines
from callbot.pipeline.memory import CallerMemory, last_turns, summarize
from callbot.pipeline.safety.pii import redact_pii
from callbot.signalling.config import CallbotConfig

if TYPE_CHECKING:
    from callbot.signalling.calls.call import Call

log = logging.getLogger(__name__)

SUMMARY_TIMEOUT_S = 60.0


class MemoryService:
    """Gives a known caller's notes to their call and writes one at hang-up (in the
    background, off the event loop)."""

    def __init__(self, config: CallbotConfig, engines: Engines) -> None:
        settings = config.memory
        self.settings = settings
        self.store = CallerMemory(settings.db, retention_days=settings.retention_days,
                                  max_chars=settings.max_chars,
                                  keep_transcripts=settings.keep_transcripts)
        self._engines = engines
        summarizer = settings.summarizer
        if summarizer == "auto":  # the 135M default writes poor summaries: keep the last turns
            capable = (config.engines.llm_backend == "openai"
                       or config.engines.llm_model != "smollm2-135m")
            summarizer = "llm" if capable else "last_turns"
        self.summarizer = summarizer
        # Phones, e-mails and card numbers never reach the store (nor the summarizer).
        self.redact_pii = config.safety.redact_pii
        self._tasks: set[asyncio.Task[None]] = set()

    async def context_for(self, caller_id: str) -> str | None:
        return await asyncio.to_thread(self.store.context, caller_id)

    def call_ended(self, call: Call) -> None:
        if call.caller_id is None:
            return
        task = asyncio.ensure_future(self._save(call.caller_id, call.id,
                                                list(call.session.history)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save(self, caller_id: str, call_id: str, history: list) -> None:  # type: ignore[type-arg]
        from callbot.pipeline.memory import conversation

        turns = conversation(history)
        if not any(m["role"] == "user" for m in turns):
            return  # the caller said nothing: nothing to remember
        if self.redact_pii:
            turns = [{**m, "content": redact_pii(m["content"])}
                     if isinstance(m.get("content"), str) else m for m in turns]
        summary = ""
        if self.summarizer == "llm":
            try:
                async with asyncio.timeout(SUMMARY_TIMEOUT_S):
                    summary = await summarize(self._engines.llm, turns)
            except Exception:
                log.warning("memory: summary failed; keeping the last turns", exc_info=True)
        if not summary:
            summary = last_turns(turns, self.settings.max_chars)
        if self.redact_pii:  # an LLM summary may restate a number it was not shown in full
            summary = redact_pii(summary)
        try:
            await asyncio.to_thread(self.store.save, caller_id, call_id, summary, turns)
        except Exception:
            log.exception("memory: could not save the note of call %s", call_id)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def close(self) -> None:
        self.store.close()
