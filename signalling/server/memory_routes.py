"""Caller memory over HTTP.

    GET    /v1/callers/{caller_id}/memory   -> {"caller_id", "memories": [{call_id, created_at,
                                                summary, transcript?}]}
    DELETE /v1/callers/{caller_id}/memory   -> {"caller_id", "deleted": n}

Who may read or erase a caller's notes: an admin token (`auth.admin_tokens`), or the caller
themself, with an unexpired signed call token whose subject is that caller id (checked, not
spent). A plain API token (`auth.bearer_tokens`) is refused (403): it starts calls, it does
not read what other people said. Every access, allowed or refused, is logged, with digests
of the caller id and the credential rather than the values. Without any configured
credential the routes answer 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from aiohttp import web

from callbot.pipeline.memory import valid_caller_id
from callbot.signalling.calls.memory import MemoryService
from callbot.signalling.errors import ApiError
from callbot.signalling.server.auth import Principal
from callbot.signalling.server.state import STATE, AppState

log = logging.getLogger(__name__)
audit = logging.getLogger("callbot.audit.memory")

memory_routes = web.RouteTableDef()


def _state(request: web.Request) -> AppState:
    return request.app[STATE]


def _caller_digest(caller_id: str) -> str:
    return hashlib.sha256(caller_id.encode()).hexdigest()[:12]


def _who(principal: Principal) -> str:
    """The principal for the log: token digests as they are, a call token's subject (a caller
    id, maybe a phone number) as a digest too."""
    if principal.kind == "call_token" and principal.subject is not None:
        return f"call_token sub:{_caller_digest(principal.subject)}"
    return f"{principal.kind} {principal.client_id}"


def _authorize(request: web.Request, state: AppState, caller_id: str) -> Principal:
    auth = state.auth
    if not auth.has_credentials:
        auth.check_origin(request)
        raise ApiError(403, "forbidden", "the memory API needs credentials: configure "
                                         "auth.admin_tokens (or auth.signing_secret)")
    action = request.method
    try:
        # "memory": a call token is verified (signature, expiry) but not spent.
        principal = auth.authenticate(request, purpose="memory")
    except ApiError as exc:
        audit.warning("memory %s caller=%s refused: %s (from %s)", action,
                      _caller_digest(caller_id), exc.code, request.remote)
        raise
    own = principal.kind == "call_token" and principal.owner == f"sub:{caller_id}"
    if not (principal.admin or own):
        audit.warning("memory %s caller=%s refused: %s is not this caller or an admin",
                      action, _caller_digest(caller_id), _who(principal))
        raise ApiError(403, "forbidden", "only an admin token or the caller's own identity "
                                         "may read or erase a caller's memory")
    return principal


def _service(request: web.Request) -> tuple[MemoryService, str, Principal]:
    state = _state(request)
    caller_id = request.match_info["caller_id"]
    principal = _authorize(request, state, caller_id)
    if not valid_caller_id(caller_id):
        raise ApiError(400, "invalid_caller_id",
                       "a caller id is 1-128 printable characters without surrounding spaces")
    if state.memory is None:
        raise ApiError(404, "memory_disabled", "caller memory is off (memory.enabled)")
    return state.memory, caller_id, principal


def _log_access(action: str, caller_id: str, principal: Principal, count: int) -> None:
    audit.info("memory %s caller=%s by %s: %d note(s)", action, _caller_digest(caller_id),
               _who(principal), count)


@memory_routes.get("/v1/callers/{caller_id}/memory")
async def get_memory(request: web.Request) -> web.Response:
    service, caller_id, principal = _service(request)
    notes = await asyncio.to_thread(service.store.notes, caller_id)
    _log_access("read", caller_id, principal, len(notes))
    return web.json_response({"caller_id": caller_id,
                              "memories": [n.to_json() for n in notes]})


@memory_routes.delete("/v1/callers/{caller_id}/memory")
async def delete_memory(request: web.Request) -> web.Response:
    service, caller_id, principal = _service(request)
    deleted = await asyncio.to_thread(service.store.forget, caller_id)
    _log_access("erase", caller_id, principal, deleted)
    return web.json_response({"caller_id": caller_id, "deleted": deleted})
