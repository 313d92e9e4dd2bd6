"""HTTP handlers of the call API (`/v1/calls`, `/healthz`) and the demo page."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from aiohttp import web

from callbot.rtc.ice import ice_server_json
from callbot.signalling.calls.assembly import assemble_call
from callbot.signalling.calls.call import Call, CallOptions
from callbot.signalling.cluster.redis_store import RedisStore, merge_metrics
from callbot.signalling.cluster.shared import ClusterUnavailable
from callbot.signalling.errors import ApiError
from callbot.signalling.server.admission import (
    Body,
    CallRequest,
    HandedOn,
    admit,
    answer_offer,
    webrtc_transport,
)
from callbot.signalling.server.auth import Principal
from callbot.signalling.server.state import STATE, AppState

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def _state(request: web.Request) -> AppState:
    return request.app[STATE]


class NativeEntrance:
    """`POST /v1/calls`: a JSON `{"type": "offer", "sdp", "options"}`; callbot's own events on
    the `events` data channel."""

    transport = "webrtc"
    forwardable = True
    offer = True

    def authenticate(self, request: web.Request, state: AppState) -> tuple[Principal, Any]:
        return state.auth.authenticate(request), None

    async def parse(self, request: web.Request, body: Body, principal: Principal,
                    credential: Any) -> CallRequest:
        data = await body.json()
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_request", "request body must be a JSON object")
        raw_options = data.get("options")
        prompt = isinstance(raw_options, dict) and "system_prompt" in raw_options
        if data.get("type") != "offer":
            raise ApiError(400, "invalid_request", "'type' must be \"offer\"")
        return CallRequest(options=_parse_options(raw_options), sdp=data.get("sdp"),
                           prompt=prompt)


NATIVE = NativeEntrance()


def _parse_options(raw: Any) -> CallOptions:
    if raw is None:
        return CallOptions()
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid_options", "'options' must be a JSON object")
    allowed = {"system_prompt", "voice", "language"}
    unknown = set(raw) - allowed
    if unknown:
        raise ApiError(400, "invalid_options", f"unknown option(s): {', '.join(sorted(unknown))}")
    prompt, voice, language = raw.get("system_prompt"), raw.get("voice"), raw.get("language")
    if prompt is not None and not isinstance(prompt, str):
        raise ApiError(400, "invalid_options", "'system_prompt' must be a string")
    for name, value in (("voice", voice), ("language", language)):
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "invalid_options", f"'{name}' must be a string")
    return CallOptions(system_prompt=prompt, voice=voice, language=language)


@routes.post("/v1/calls")
async def create_call(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        admitted = await admit(request, state, NATIVE)
    except HandedOn as handed:
        return handed.response
    async with admitted:
        transport = webrtc_transport(state, admitted.ice_servers)
        call = await assemble_call(state.services(), admitted.options, transport,
                                   token_subject=admitted.token_subject)
        assert admitted.request.sdp is not None
        answer = await answer_offer(state, call, transport, admitted.request.sdp)
        await admitted.started(call)
    limits = state.config.limits
    return web.json_response({
        "call_id": call.id, "sdp": answer, "type": "answer",
        "max_call_s": limits.max_call_s, "idle_timeout_s": limits.idle_timeout_s,
    }, status=201)


def _describe(state: AppState, call: Call) -> dict[str, Any]:
    return {**call.describe(), "node": state.store.node_id}


async def _cluster(state: AppState, op: Any) -> Any:
    try:
        return await op
    except ClusterUnavailable:
        raise ApiError(503, "cluster_unavailable", "the cluster's shared state (Redis) is "
                       "unreachable", headers={"Retry-After": "5"}) from None


@routes.get("/v1/calls")
async def list_calls(request: web.Request) -> web.Response:
    """The caller's own calls (every call for an admin token)."""
    state = _state(request)
    principal = state.auth.authenticate(request, purpose="list")
    local = {c.id: _describe(state, c) for c in state.calls_of(principal)}
    if not state.store.clustered:
        return web.json_response({"calls": list(local.values())})
    entries = [e for e in await _cluster(state, state.store.list_calls())
               if e["call_id"] in local or principal.owns(str(e.get("owner", "")))]
    calls = [local.pop(e["call_id"]) if e["call_id"] in local else _public(e) for e in entries]
    calls.extend(local.values())  # negotiated here but not yet written to the store
    return web.json_response({"calls": calls})


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """A store entry as the API shows it (the client key and owner stay inside)."""
    return {k: v for k, v in entry.items() if k not in ("client", "owner")}


@routes.get("/v1/cluster")
async def cluster_nodes(request: web.Request) -> web.Response:
    """The live workers/nodes sharing this one's state (empty when it runs alone)."""
    state = _state(request)
    state.auth.authenticate(request, allow_call_tokens=False)
    return web.json_response({"node": state.store.node_id,
                              "nodes": await _cluster(state, state.store.nodes())})


@routes.get("/v1/calls/{call_id}")
async def get_call(request: web.Request) -> web.Response:
    state = _state(request)
    principal = state.auth.authenticate(request, purpose="list")
    call_id = request.match_info["call_id"]
    call = next((c for c in state.calls_of(principal) if c.id == call_id), None)
    if call is not None:
        return web.json_response(_describe(state, call))
    entry = await _cluster(state, state.store.call_record(call_id))
    if entry is None or not principal.owns(str(entry.get("owner", ""))):
        raise ApiError(404, "call_not_found", "no call with that id")
    return web.json_response(_public(entry))


@routes.delete("/v1/calls/{call_id}")
async def delete_call(request: web.Request) -> web.Response:
    """Hang up one of the caller's own calls; another's is a 404, as if it did not exist."""
    state = _state(request)
    principal = state.auth.authenticate(request, purpose="manage")
    wanted = request.match_info["call_id"]
    if not any(c.id == wanted for c in state.calls_of(principal)):
        entry = (await _cluster(state, state.store.call_record(wanted))
                 if state.store.clustered else None)  # another node's call: its owner?
        if (entry is None or entry.get("state") != "active"
                or not principal.owns(str(entry.get("owner", "")))):
            raise ApiError(404, "call_not_found", "no active call with that id")
    return await hang_up(request)


@routes.post("/v1/calls/{call_id}/hangup")
async def hangup_call(request: web.Request) -> web.Response:
    """DELETE for `navigator.sendBeacon` (it can only POST): a page hanging up as it closes.

    A beacon cannot carry `Authorization`: the unguessable call id is the capability (only its
    creator learns it; `GET /v1/calls` lists only the caller's own), plus the Origin check
    that offers get, so another site's page cannot end a call it learned the id of. The body,
    if any, is ignored.
    """
    _state(request).auth.check_origin(request)
    return await hang_up(request)


async def hang_up(request: web.Request) -> web.Response:
    """End a call: here if it lives here, else through its owner (a cluster)."""
    state = _state(request)
    call_id = request.match_info["call_id"]
    call: Call | None = state.registry.get(call_id)
    if call is not None:
        await call.close("hangup")
        return web.Response(status=204)
    if state.store.clustered and await _cluster(state, state.store.hangup(call_id)):
        for _ in range(100):  # the owner ends it; wait (up to 5 s) until it says so
            entry = await _cluster(state, state.store.call_record(call_id))
            if entry is None or entry.get("state") == "ended":
                return web.Response(status=204)
            await asyncio.sleep(0.05)
        raise ApiError(504, "hangup_timeout", "the node that owns the call did not end it")
    raise ApiError(404, "call_not_found", "no active call with that id")


@routes.get("/v1/ice_servers")
async def ice_servers(request: web.Request) -> web.Response:
    """The STUN/TURN servers a page should give its RTCPeerConnection (with short-lived TURN
    credentials), and the ICE transport policy. Authenticated like starting a call, but a
    call token is only checked, not spent: the page uses it for the call next."""
    state = _state(request)
    principal = state.auth.authenticate(request, purpose="peek")
    servers = await state.ice_servers_for(request, principal)
    return web.json_response(
        {"ice_servers": [ice_server_json(s) for s in servers],
         "ice_transport_policy": state.config.webrtc.ice_transport_policy},
        headers={"Cache-Control": "no-store"})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response({
        "status": "draining" if state.draining else "ok",
        "calls": len(state.registry),
        "max_calls": state.registry.max_calls,
        # Admission from measured capacity (server/capacity.py): a call beyond it gets 503.
        "capacity": state.registry.capacity,
        "headroom": state.headroom,
        "latency_budget_ms": state.config.capacity.latency_budget_ms,
        "reply_p95_ms": state.capacity.reply_p95_ms(),
        "node": state.store.node_id,
        "cluster": state.store.available if state.store.clustered else None,
        "asr": state.config.engines.asr_model,
        "llm": state.engines.llm.name,
        "voices": list(state.engines.tts.voices),
        "languages": list(state.allowed_languages()),
        "language_voices": state.language_voices,  # the voice that speaks each language
        "safety": state.guard is not None,
        "max_call_s": state.config.limits.max_call_s,
        "vision": state.vision.name if state.vision is not None else None,
        "bot_video": state.config.vision.bot_video,
    })


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """This process's metrics; in a cluster the sum over every live worker/node (unless
    `?scope=node`)."""
    state = _state(request)
    body, content_type = state.metrics.render()
    store = state.store
    if isinstance(store, RedisStore) and request.query.get("scope") != "node":
        try:
            texts = await store.cluster_metrics()
        except ClusterUnavailable:
            texts = []
        if texts:
            body = merge_metrics(texts).encode()
    return web.Response(body=body, headers={"Content-Type": content_type})


def _demo_file(name: str) -> bytes:
    return (resources.files("callbot.web_demo") / name).read_bytes()


_DEMO_TYPES = {"app.js": "text/javascript", "video.js": "text/javascript", "style.css": "text/css"}


@routes.get("/")
async def demo_page(request: web.Request) -> web.Response:
    if not request.path.endswith("/"):  # relative URLs in the page need the trailing slash
        raise web.HTTPFound(request.path + "/")
    return web.Response(body=_demo_file("index.html"), content_type="text/html")


@routes.get("/demo/{name}")
async def demo_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _DEMO_TYPES:
        raise ApiError(404, "not_found", "no such file")
    return web.Response(body=_demo_file(name), content_type=_DEMO_TYPES[name])
