"""Caller memory over HTTP.

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

from aiohttp import web

from callbot.pipeline.memory import valid_caller_id
from callbot.signalling.calls.memory import MemoryService
from callbot.signalling.errors import ApiError
from callbot.signalling.server.state import STATE, AppState

log = logging.getLogger(__name__)

memory_routes = web.RouteTableDef()


def _state(request: web.Request) -> AppState:
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
