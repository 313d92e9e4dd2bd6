"""HTTP handlers of the call API (`/v1/calls`, `/healthz`) and the demo page."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from aiohttp import web

from callbot.rtc.offer_guard import OfferRefused, guard_offer

from . import safejson
from .augmentation import call_extras
from .auth import Principal
from .call import Call, CallOptions
from .cluster import RedisStore, merge_metrics
from .errors import ApiError
from .forward import FORWARD_HEADER, forward_offer
from .registry import CallLimitReached
from .shared import ClusterUnavailable
from .state import STATE, AppState

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def _state(request: web.Request) -> AppState:
    return request.app[STATE]


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, however it arrives (several TCP segments, chunked), up to `max_bytes`
    (413) and within `timeout_s` (408: a client that trickles its body is dropped)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "body_too_large", f"request body is over {max_bytes} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > max_bytes:
                    raise ApiError(413, "body_too_large", f"request body is over {max_bytes} bytes")
    except TimeoutError:
        raise ApiError(408, "body_timeout",
                       f"the request body did not arrive within {timeout_s:g} s") from None
    return bytes(body)


async def _read_json(request: web.Request, max_bytes: int, timeout_s: float) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the offer as application/json")
    body = await read_body(request, max_bytes, timeout_s)
    try:
        return safejson.loads(body)
    except safejson.InvalidJson as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON ({exc})") from None


def _validate_offer(body: Any, max_sdp_bytes: int) -> str:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object")
    if body.get("type") != "offer":
        raise ApiError(400, "invalid_request", "'type' must be \"offer\"")
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ApiError(400, "invalid_sdp", "'sdp' must be a non-empty string")
    try:
        sdp_bytes = len(sdp.encode())
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") decodes from JSON but is not text
        raise ApiError(400, "invalid_sdp", "'sdp' is not valid Unicode text") from None
    if sdp_bytes > max_sdp_bytes:
        raise ApiError(413, "sdp_too_large", f"'sdp' is over {max_sdp_bytes} bytes")
    if not sdp.lstrip().startswith("v=0"):
        raise ApiError(400, "invalid_sdp", "'sdp' is not a session description (no v=0)")
    if not any(line.startswith("m=audio ") for line in sdp.splitlines()):
        raise ApiError(400, "no_audio", "the offer has no audio m-line: a call needs a microphone")
    return sdp


def _guard_offer(sdp: str, state: AppState) -> str:
    limits = state.config.limits
    try:
        return guard_offer(sdp, max_m_lines=limits.max_m_lines,
                           max_candidates=limits.max_remote_candidates,
                           policy=state.candidate_policy)
    except OfferRefused as exc:
        raise ApiError(400, exc.code, str(exc)) from None


def _validate_options(raw: Any, state: AppState) -> CallOptions:
    if raw is None:
        return CallOptions()
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid_options", "'options' must be a JSON object")
    allowed = {"system_prompt", "voice", "language"}
    unknown = set(raw) - allowed
    if unknown:
        raise ApiError(400, "invalid_options", f"unknown option(s): {', '.join(sorted(unknown))}")
    limits = state.config.limits
    prompt = raw.get("system_prompt")
    max_chars = limits.max_prompt_chars
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > max_chars):
        raise ApiError(400, "invalid_options",
                       f"'system_prompt' must be a string of at most {max_chars} characters")
    voice = raw.get("voice")
    voices = state.engines.tts.voices
    if voice is not None and voice not in voices:
        raise ApiError(400, "invalid_options", f"'voice' must be one of {list(voices)}")
    language = raw.get("language")
    languages = state.allowed_languages()
    if language is not None and language not in languages:
        raise ApiError(400, "invalid_options", f"'language' must be one of {list(languages)}")
    return CallOptions(system_prompt=prompt, voice=voice, language=language)


@routes.post("/v1/calls")
async def create_call(request: web.Request) -> web.Response:
    state = _state(request)
    store = state.store
    forwarded = False
    if isinstance(store, RedisStore) and FORWARD_HEADER in request.headers:
        remote = store.verify_forward(request.headers[FORWARD_HEADER])
        if remote is not None:  # a node of this cluster handed this offer on
            request, forwarded = request.clone(remote=remote), True
    reserved = False
    if store.clustered:  # a slot first: a node that has none hands the offer on untouched
        state.refuse_if_unavailable()
        if not forwarded and not state.draining:
            try:
                state.registry.reserve()
                reserved = True
            except CallLimitReached:
                pass
        if not reserved and not forwarded:
            return await _hand_on(request, state)
    try:
        if state.draining:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        try:
            principal = state.auth.authenticate(request)
        except ApiError as exc:
            state.metrics.call_rejected(exc.code)
            raise
        await state.admit(principal)  # single-use token (401), per-client limits (429)
    except BaseException:
        if reserved:
            state.registry.release_reservation()
        raise
    try:
        call, answer = await _negotiate(request, state, principal, reserved=reserved)
    except BaseException:
        await state.store.release(principal.client_id)
        raise
    await state.call_started(call, principal)
    limits = state.config.limits
    return web.json_response({
        "call_id": call.id, "sdp": answer, "type": "answer",
        "max_call_s": limits.max_call_s, "idle_timeout_s": limits.idle_timeout_s,
    }, status=201)


async def _hand_on(request: web.Request, state: AppState) -> web.Response:
    """This node is full or draining: the offer goes to the node with most free slots."""
    store = state.store
    assert isinstance(store, RedisStore)
    try:
        target = await store.pick_node()
    except ClusterUnavailable:
        state.refuse_if_unavailable()
        raise
    if target is None:
        state.metrics.call_rejected("capacity")
        raise ApiError(503, "cluster_full", "every node of the cluster is at its call limit; "
                       "try again later", headers={"Retry-After": "5"})
    state.metrics.call_rejected("forwarded")
    signed = store.sign_forward(request.remote or "unknown")
    return await forward_offer(request, store.http(), target, signed)


async def _negotiate(request: web.Request, state: AppState, principal: Principal, *,
                     reserved: bool = False) -> tuple[Call, str]:
    """Read and check the offer, take a slot (unless `reserved`), answer."""
    limits = state.config.limits
    try:
        body = await _read_json(request, limits.max_body_bytes, limits.body_timeout_s)
        if (isinstance(body, dict) and isinstance(body.get("options"), dict)
                and "system_prompt" in body["options"]
                and not state.client_prompt_allowed(principal)):
            raise ApiError(403, "prompt_not_allowed",
                           "this server does not let clients set 'system_prompt' "
                           "(auth.client_system_prompt)")
        sdp = _guard_offer(_validate_offer(body, limits.max_sdp_bytes), state)
        options = _validate_options(body.get("options"), state)
        options = await state.hook_runner.options_for(request, options)
        extras = await call_extras(state, options, principal)
        ice_servers = await state.hook_runner.ice_servers_for(request, state.config.ice_servers)
    except BaseException:
        if reserved:
            state.registry.release_reservation()
        raise
    try:
        if not reserved:
            state.registry.reserve()
    except CallLimitReached as exc:
        state.metrics.call_rejected(exc.metric)
        raise exc.refusal() from None
    call = Call(
        state.config, state.engines, extras.options,
        on_closed=state.on_call_closed, on_event=state.on_call_event, ice_servers=ice_servers,
        guards=[state.guard] if state.guard is not None else [],
        languages=state.allowed_languages(), voices_by_language=state.language_voices,
        context_sources=extras.sources, caller_id=extras.caller_id,
        vision=state.vision,
    )
    if extras.memory:
        call.session.add_context(extras.memory)
    try:
        answer = await call.answer(sdp)
    except Exception as exc:
        state.registry.release_reservation()
        state.metrics.call_rejected("bad_sdp")
        log.info("offer rejected: %s", exc)
        raise ApiError(400, "sdp_rejected", f"the offer could not be used: {exc}") from None
    except BaseException:
        state.registry.release_reservation()
        raise
    state.registry.add(call)
    state.metrics.call_started()
    return call, answer


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
    return await _hang_up(request)


@routes.post("/v1/calls/{call_id}/hangup")
async def hangup_call(request: web.Request) -> web.Response:
    """DELETE for `navigator.sendBeacon` (it can only POST): a page hanging up as it closes.

    A beacon cannot carry `Authorization`: the unguessable call id is the capability (only its
    creator learns it; `GET /v1/calls` lists only the caller's own), plus the Origin check
    that offers get, so another site's page cannot end a call it learned the id of. The body,
    if any, is ignored.
    """
    _state(request).auth.check_origin(request)
    return await _hang_up(request)


async def _hang_up(request: web.Request) -> web.Response:
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


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response({
        "status": "draining" if state.draining else "ok",
        "calls": len(state.registry),
        "max_calls": state.registry.max_calls,
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
