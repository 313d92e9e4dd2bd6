"""HTTP and WebSocket routes of the OpenAI Realtime protocol.

- `POST /v1/realtime/client_secrets` -> `{"value": "ek_...", "expires_at", "session"}`
- `POST /v1/realtime/calls` (raw `application/sdp`, or multipart `sdp` + `session`) -> 201, the
  SDP answer, `Location: /v1/realtime/calls/{call_id}`; events on the `oai-events` channel
- `POST /v1/realtime/calls/{call_id}/hangup`
- `GET /v1/realtime` (WebSocket): the same events, audio as base64 PCM16
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from callbot.pipeline import events as ev
from callbot.pipeline.engines import Engines
from callbot.pipeline.session import VoiceSession

from ..auth import Principal, _bearer
from ..call import Call, CallOptions
from ..errors import ApiError
from ..registry import CallLimitReached
from ..routes import _validate_offer
from ..state import STATE, AppState
from .audio import StreamingOutput
from .protocol import RealtimeProtocol
from .secrets import DEFAULT_TTL_S, MAX_TTL_S, ClientSecretStore
from .session_config import (
    RealtimeSessionConfig,
    SessionError,
    apply_update,
    default_turn_detection,
)

log = logging.getLogger(__name__)

SECRETS = web.AppKey("callbot_realtime_secrets", ClientSecretStore)
MAX_CHANNEL_EVENT_BYTES = 64 * 1024  # session.update with tools is bigger than callbot's events
MAX_WS_MESSAGE_BYTES = 1024 * 1024  # an input_audio_buffer.append of a few seconds
MAX_UNSENT = 5000  # events queued for a WebSocket client that does not read: it is closed
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    app[SECRETS] = ClientSecretStore()
    app.add_routes(routes)


def _default_config(state: AppState) -> RealtimeSessionConfig:
    return RealtimeSessionConfig(
        instructions=state.config.turn.reply.system_prompt,
        voice=state.engines.tts.voices[0],
        turn_detection=default_turn_detection(state.config.turn),
    )


def _configure(state: AppState, config: RealtimeSessionConfig, session: Any
               ) -> RealtimeSessionConfig:
    try:
        return apply_update(config, session, voices=tuple(state.engines.tts.voices),
                            base=state.config.turn,
                            max_prompt_chars=state.config.limits.max_prompt_chars)
    except SessionError as exc:
        raise ApiError(400, "invalid_session", f"{exc.param}: {exc}") from None


def _transcription_model(state: AppState) -> str:
    return f"whisper-{state.config.engines.asr_model}"


def _principal(request: web.Request, state: AppState, token: str | None
               ) -> tuple[Principal, dict[str, Any] | None]:
    """Who calls, and the session config of the client secret they used (if any)."""
    if token is not None and token.startswith("ek_"):
        state.auth.check_origin(request)
        secret = request.app[SECRETS].use(token)
        if secret is None:
            raise ApiError(401, "invalid_client_secret",
                           "this client secret is unknown, expired or already used")
        remote = request.remote or "unknown"
        # The call belongs to whoever minted the secret (their client id is their identity).
        return Principal(client_id=secret.client_id, kind="client_secret", remote=remote,
                         owner=secret.client_id,
                         authenticated=not secret.client_id.startswith("ip:")), secret.session
    return state.auth.authenticate(request), None


def _open_state(request: web.Request) -> AppState:
    state = request.app[STATE]
    if state.draining:
        raise ApiError(503, "shutting_down", "the server is shutting down")
    return state


# ---- client secrets ----------------------------------------------------------------------------


@routes.post("/v1/realtime/client_secrets")
async def client_secrets(request: web.Request) -> web.Response:
    state = request.app[STATE]
    principal = state.auth.authenticate(request, allow_call_tokens=False)
    body: Any = {}
    if request.can_read_body:
        raw = await request.content.read(state.config.limits.max_body_bytes + 1)
        if len(raw) > state.config.limits.max_body_bytes:
            raise ApiError(413, "body_too_large", "request body is too large")
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object")
    ttl: Any = DEFAULT_TTL_S
    expires = body.get("expires_after")
    if expires is not None:
        ttl = expires.get("seconds") if isinstance(expires, dict) else None
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 10 <= ttl <= MAX_TTL_S:
            raise ApiError(400, "invalid_request",
                           f"'expires_after.seconds' must be 10..{MAX_TTL_S}")
    session = body.get("session") or {}
    config = _configure(state, _default_config(state), session)
    secret = request.app[SECRETS].mint(principal.client_id, session, ttl)
    wire = config.to_wire("sess_pending", _transcription_model(state))
    return web.json_response({"value": secret.value, "expires_at": int(secret.expires_at),
                              "session": wire})


# ---- WebRTC ------------------------------------------------------------------------------------


async def _read_offer(request: web.Request, state: AppState) -> tuple[str, Any]:
    limits = state.config.limits
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise ApiError(413, "body_too_large", f"request body is over {limits.max_body_bytes} bytes")
    session: Any = None
    if request.content_type == "application/sdp":
        raw = await request.content.read(limits.max_body_bytes + 1)
        if len(raw) > limits.max_body_bytes:
            raise ApiError(413, "body_too_large", "request body is too large")
        try:
            sdp = raw.decode()
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_sdp", "the offer is not UTF-8 text") from None
    elif request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.post()
        sdp_field, session_field = form.get("sdp"), form.get("session")
        if not isinstance(sdp_field, str):
            raise ApiError(400, "invalid_sdp", "the form needs an 'sdp' field")
        sdp = sdp_field
        if session_field is not None:
            if not isinstance(session_field, str):
                raise ApiError(400, "invalid_session", "'session' must be a JSON text field")
            try:
                session = json.loads(session_field)
            except json.JSONDecodeError:
                raise ApiError(400, "invalid_session", "'session' is not valid JSON") from None
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send the offer as application/sdp or multipart/form-data")
    return _validate_offer({"type": "offer", "sdp": sdp}, limits.max_sdp_bytes), session


@routes.post("/v1/realtime/calls")
async def create_call(request: web.Request) -> web.Response:
    state = _open_state(request)
    try:
        principal, secret_session = _principal(request, state, _bearer(request))
    except ApiError as exc:
        state.metrics.call_rejected(exc.code)
        raise
    await state.admit(principal)
    try:
        call = await _negotiate(request, state, secret_session)
    except BaseException:
        await state.store.release(principal.client_id)
        raise
    await state.call_started(call, principal)
    return web.Response(status=201, body=call.answer_sdp, content_type="application/sdp",
                        headers={"Location": f"/v1/realtime/calls/{call.id}"})


class _RealtimeCall(Call):
    answer_sdp: str = ""


async def _negotiate(request: web.Request, state: AppState, secret_session: Any
                     ) -> _RealtimeCall:
    sdp, form_session = await _read_offer(request, state)
    config = _default_config(state)
    for update in (secret_session, form_session):
        if update:
            config = _configure(state, config, update)
    options = CallOptions(system_prompt=config.instructions, voice=config.voice)
    options = await state.hook_runner.options_for(request, options)
    ice_servers = await state.hook_runner.ice_servers_for(request, state.config.ice_servers)
    try:
        state.registry.reserve()
    except CallLimitReached as exc:
        state.metrics.call_rejected(exc.metric)
        raise exc.refusal() from None
    call = _RealtimeCall(state.config, state.engines, options, on_closed=state.on_call_closed,
                         on_event=state.on_call_event, ice_servers=ice_servers,
                         vision=state.vision)
    protocol = RealtimeProtocol(
        call.session, call.send_raw, config=config, base_settings=state.config.turn,
        voices=tuple(state.engines.tts.voices), transcription_model=_transcription_model(state),
        transport="webrtc", max_message_bytes=MAX_CHANNEL_EVENT_BYTES,
        max_prompt_chars=state.config.limits.max_prompt_chars,
    )
    call.protocol = protocol
    protocol.start()  # session.created: the first event on the channel once it opens
    try:
        call.answer_sdp = await call.answer(sdp)
    except Exception as exc:
        state.registry.release_reservation()
        state.metrics.call_rejected("bad_sdp")
        raise ApiError(400, "sdp_rejected", f"the offer could not be used: {exc}") from None
    except BaseException:
        state.registry.release_reservation()
        raise
    state.registry.add(call)
    state.metrics.call_started()
    return call


@routes.post("/v1/realtime/calls/{call_id}/hangup")
async def hangup(request: web.Request) -> web.Response:
    call = request.app[STATE].registry.get(request.match_info["call_id"])
    if call is None:
        raise ApiError(404, "call_not_found", "no active call with that id")
    await call.close("hangup")
    return web.json_response({})


# ---- WebSocket ---------------------------------------------------------------------------------


def _ws_token(request: web.Request) -> str | None:
    """The key from `Authorization: Bearer`, or from the subprotocol browsers use
    (`openai-insecure-api-key.<key>`)."""
    token = _bearer(request)
    if token is not None:
        return token
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    for proto in (p.strip() for p in offered.split(",")):
        if proto.startswith(INSECURE_KEY_PROTOCOL):
            return proto[len(INSECURE_KEY_PROTOCOL):]
    return None


@routes.get("/v1/realtime")
async def websocket(request: web.Request) -> web.StreamResponse:
    state = _open_state(request)
    principal, secret_session = _principal(request, state, _ws_token(request))
    config = _default_config(state)
    if secret_session:
        config = _configure(state, config, secret_session)
    model = request.query.get("model")
    if model:
        config.model = model[:100]
    await state.admit(principal)
    try:
        state.registry.reserve()  # a WebSocket session holds a call slot while it lasts
    except CallLimitReached as exc:
        await state.store.release(principal.client_id)
        state.metrics.call_rejected(exc.metric)
        raise exc.refusal() from None
    try:
        ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=MAX_WS_MESSAGE_BYTES,
                                   heartbeat=20)
        await ws.prepare(request)
        state.metrics.call_started()
        reason = await _serve_socket(ws, state, state.engines, config)
    finally:
        state.registry.release_reservation()
        await state.store.release(principal.client_id)
    state.metrics.call_ended(reason, 0, 0)
    return ws


async def _serve_socket(ws: web.WebSocketResponse, state: AppState, engines: Engines,
                        config: RealtimeSessionConfig) -> str:
    queue: asyncio.Queue[str] = asyncio.Queue()
    overflow = asyncio.Event()

    def send(message: str) -> None:
        if queue.qsize() >= MAX_UNSENT:
            overflow.set()
            return
        queue.put_nowait(message)

    holder: list[RealtimeProtocol] = []
    output = StreamingOutput(lambda pcm: holder[0].send_audio(pcm), config.output_rate)
    def emit(event: ev.Event) -> None:
        if isinstance(event, ev.TurnMetrics):
            state.metrics.turn(event.fields())  # the same per-stage latency histograms
        holder[0].on_event(event)

    session = VoiceSession(engines, output=output, emit=emit, settings=state.config.turn,
                           system_prompt=config.instructions, voice=config.voice)
    protocol = RealtimeProtocol(
        session, send, config=config, base_settings=state.config.turn,
        voices=tuple(engines.tts.voices), transcription_model=_transcription_model(state),
        transport="websocket", max_message_bytes=MAX_WS_MESSAGE_BYTES,
        max_prompt_chars=state.config.limits.max_prompt_chars, output=output,
    )
    holder.append(protocol)
    protocol.start()

    async def writer() -> None:
        while True:
            await ws.send_str(await queue.get())

    async def reader() -> str:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                protocol.on_message(msg.data)
            elif msg.type == WSMsgType.BINARY:
                protocol.on_message(msg.data)
            else:
                break
        return "hangup"

    writing = asyncio.ensure_future(writer())
    reading = asyncio.ensure_future(reader())
    overflowing = asyncio.ensure_future(overflow.wait())
    reason = "hangup"
    try:
        done, _ = await asyncio.wait({writing, reading, overflowing},
                                     timeout=state.config.limits.max_call_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            reason = "max_duration"
        elif overflowing in done:
            reason = "slow_client"
        elif writing in done and writing.exception() is not None:
            reason = "disconnected"
    finally:
        protocol.close()
        await session.close()
        for task in (writing, reading, overflowing):
            task.cancel()
        await asyncio.gather(writing, reading, overflowing, return_exceptions=True)
        # what is already queued (the last events) goes out before the close
        with contextlib.suppress(Exception):
            while not queue.empty() and not ws.closed:
                await ws.send_str(queue.get_nowait())
        await ws.close()
    log.info("realtime websocket session ended: %s", reason)
    return reason
