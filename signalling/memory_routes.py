"""Caller memory over HTTP, and its life-cycle in the server.

    GET    /v1/callers/{caller_id}/memory   -> {"caller_id", "memories": [{call_id, created_at,
                                                summary, transcript?}]}
    DELETE /v1/callers/{caller_id}/memory   -> {"caller_id", "deleted": n}

Both need a static API token (`auth.bearer_tokens`, `Authorization: Bearer ...`), whatever
the auth mode: what a caller said is not for anyone who can reach the port. Signed call
tokens (what a browser holds for one call) are refused. Without configured tokens the routes
answer 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from callbot.pipeline.engines import Engines
from callbot.pipeline.memory import CallerMemory, last_turns, summarize, valid_caller_id

from .config import CallbotConfig
from .errors import ApiError

if TYPE_CHECKING:
    from .call import Call
    from .state import AppState

log = logging.getLogger(__name__)

memory_routes = web.RouteTableDef()
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
        summary = ""
        if self.summarizer == "llm":
            try:
                async with asyncio.timeout(SUMMARY_TIMEOUT_S):
                    summary = await summarize(self._engines.llm, turns)
            except Exception:
                log.warning("memory: summary failed; keeping the last turns", exc_info=True)
        if not summary:
            summary = last_turns(turns, self.settings.max_chars)
        try:
            await asyncio.to_thread(self.store.save, caller_id, call_id, summary, turns)
        except Exception:
            log.exception("memory: could not save the note of call %s", call_id)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def close(self) -> None:
        self.store.close()


def _state(request: web.Request) -> AppState:
    from .state import STATE

    return request.app[STATE]


def _authorize(request: web.Request, state: AppState) -> None:
    state.auth.check_origin(request)
    tokens = state.config.auth.bearer_tokens
    if not tokens:
        raise ApiError(403, "forbidden", "the memory API needs a static API token: "
                                         "configure auth.bearer_tokens")
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
    given = hashlib.sha256(token.encode()).digest()
    if not any(hmac.compare_digest(hashlib.sha256(t.encode()).digest(), given) for t in tokens):
        raise ApiError(401, "unauthorized", "invalid token")


def _service(request: web.Request) -> tuple[MemoryService, str]:
    state = _state(request)
    _authorize(request, state)
    caller_id = request.match_info["caller_id"]
    if not valid_caller_id(caller_id):
        raise ApiError(400, "invalid_caller_id",
                       "a caller id is 1-128 printable characters without surrounding spaces")
    if state.memory is None:
        raise ApiError(404, "memory_disabled", "caller memory is off (memory.enabled)")
    return state.memory, caller_id


@memory_routes.get("/v1/callers/{caller_id}/memory")
async def get_memory(request: web.Request) -> web.Response:
    service, caller_id = _service(request)
    notes = await asyncio.to_thread(service.store.notes, caller_id)
    return web.json_response({"caller_id": caller_id,
                              "memories": [n.to_json() for n in notes]})


@memory_routes.delete("/v1/callers/{caller_id}/memory")
async def delete_memory(request: web.Request) -> web.Response:
    service, caller_id = _service(request)
    deleted = await asyncio.to_thread(service.store.forget, caller_id)
    return web.json_response({"caller_id": caller_id, "deleted": deleted})
