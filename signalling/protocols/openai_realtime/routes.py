"""HTTP and WebSocket routes of the OpenAI Realtime protocol.

- `POST /v1/realtime/client_secrets` -> `{"value": "ek_...", "expires_at", "session"}`
- `POST /v1/realtime/calls` (raw `application/sdp`, or multipart `sdp` + `session`) -> 201, the
  SDP answer, `Location: /v1/realtime/calls/{call_id}`; events on the `oai-events` channel
- `POST /v1/realtime/calls/{call_id}/hangup`
- `GET /v1/realtime` (WebSocket): the same events, audio as base64 PCM16

Both call routes are entrances (`server/admission.py`): they go through the one admission and
the one conversation assembly like `POST /v1/calls`; the protocol only translates events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from callbot.pipeline.session import VoiceSession
from callbot.signalling.calls.assembly import ProtocolFactory, assemble_call
from callbot.signalling.calls.call import CallOptions
from callbot.signalling.cluster.shared import ClusterUnavailable, TicketLimits
from callbot.signalling.errors import ApiError
from callbot.signalling.protocols.openai_realtime.protocol import RealtimeProtocol
from callbot.signalling.protocols.openai_realtime.secrets import (
    DEFAULT_TTL_S,
    MAX_TTL_S,
    ClientSecretStore,
)
from callbot.signalling.protocols.openai_realtime.session_config import (
    RealtimeSessionConfig,
    SessionError,
    apply_update,
    default_turn_detection,
)
from callbot.signalling.protocols.openai_realtime.websocket import WebSocketTransport
from callbot.signalling.ratelimit import RateLimited
from callbot.signalling.server.admission import (
    Admitted,
    Body,
    CallRequest,
    admit,
    answer_offer,
    parse_json,
    webrtc_transport,
)
from callbot.signalling.server.auth import Principal, _bearer
from callbot.signalling.server.routes import hang_up
from callbot.signalling.server.state import STATE, AppState

log = logging.getLogger(__name__)

MAX_CHANNEL_EVENT_BYTES = 64 * 1024  # session.update with tools is bigger than callbot's events
MAX_WS_MESSAGE_BYTES = 1024 * 1024  # an input_audio_buffer.append of a few seconds
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    app.add_routes(routes)


def _secrets(state: AppState) -> ClientSecretStore:
    """Client secrets live in the app's shared store: every worker and node honours them."""
    limits = state.config.limits
    return ClientSecretStore(state.store, TicketLimits(
        per_minute=limits.client_secrets_per_minute,
        per_client=limits.max_client_secrets_per_client, total=limits.max_client_secrets))


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


def _sets_instructions(session: Any) -> bool:
    return isinstance(session, dict) and session.get("instructions") is not None


def _transcription_model(state: AppState) -> str:
    return f"whisper-{state.config.engines.asr_model}"


async def _principal(request: web.Request, state: AppState, token: str | None
                     ) -> tuple[Principal, dict[str, Any] | None]:
    """Who calls, and the session config of the client secret they used (if any)."""
    if token is not None and token.startswith("ek_"):
        state.auth.check_origin(request)
        try:
            secret = await _secrets(state).use(token)
        except ClusterUnavailable:
            state.refuse_if_unavailable()
            raise
        if secret is None:
            raise ApiError(401, "invalid_client_secret",
                           "this client secret is unknown, expired or already used")
        remote = request.remote or "unknown"
        # The call belongs to whoever minted the secret (their client id is their identity).
        return Principal(client_id=secret.client_id, kind="client_secret", remote=remote,
                         owner=secret.client_id,
                         authenticated=not secret.client_id.startswith("ip:")), secret.session
    return state.auth.authenticate(request), None


def _call_request(state: AppState, updates: tuple[Any, ...], sdp: str | None) -> CallRequest:
    """The session the client asked for (its client secret's, then the request's own)."""
    config = _default_config(state)
    for update in updates:
        if update:
            config = _configure(state, config, update)
    return CallRequest(options=CallOptions(system_prompt=config.instructions, voice=config.voice),
                       sdp=sdp, prompt=any(_sets_instructions(u) for u in updates),
                       detail=config)


def _protocol(state: AppState, principal: Principal, config: RealtimeSessionConfig, *,
              transport: str, max_message_bytes: int,
              socket: WebSocketTransport | None = None) -> ProtocolFactory:
    def start(session: VoiceSession, send: Callable[[str], None]) -> RealtimeProtocol:
        protocol = RealtimeProtocol(
            session, send, config=config, base_settings=state.config.turn,
            voices=tuple(state.engines.tts.voices),
            transcription_model=_transcription_model(state), transport=transport,
            max_message_bytes=max_message_bytes,
            max_prompt_chars=state.config.limits.max_prompt_chars,
            output=socket.output if socket is not None else None,
            instructions_allowed=state.client_prompt_allowed(principal),
            limits=state.config.limits,
        )
        if socket is not None:
            socket.audio_sink = protocol.send_audio  # the bot's voice, as protocol events
        protocol.start()  # session.created: the first event once the channel opens
        return protocol
    return start


# ---- client secrets ----------------------------------------------------------------------------


@routes.post("/v1/realtime/client_secrets")
async def client_secrets(request: web.Request) -> web.Response:
    state = request.app[STATE]
    principal = state.auth.authenticate(request, allow_call_tokens=False)
    limits = state.config.limits
    body = await Body(request, limits.max_body_bytes, limits.body_timeout_s).optional_json()
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
    if _sets_instructions(session) and not state.client_prompt_allowed(principal):
        raise ApiError(403, "prompt_not_allowed",
                       "this server does not let clients set 'instructions' "
                       "(auth.client_system_prompt)")
    config = _configure(state, _default_config(state), session)
    try:
        secret = await _secrets(state).mint(principal.client_id, session, ttl)
    except RateLimited as exc:
        raise ApiError(429, "rate_limited", str(exc),
                       headers={"Retry-After": str(exc.retry_after)}) from None
    except ClusterUnavailable:
        state.refuse_if_unavailable()
        raise
    wire = config.to_wire("sess_pending", _transcription_model(state))
    return web.json_response({"value": secret.value, "expires_at": int(secret.expires_at),
                              "session": wire})


# ---- WebRTC ------------------------------------------------------------------------------------


class RealtimeWebRtcEntrance:
    """`POST /v1/realtime/calls`: the offer as `application/sdp`, or a form with `sdp` and
    `session`; the Realtime events on the `oai-events` data channel."""

    transport = "webrtc"
    forwardable = False
    offer = True

    async def authenticate(self, request: web.Request, state: AppState
                           ) -> tuple[Principal, Any]:
        return await _principal(request, state, _bearer(request))

    async def parse(self, request: web.Request, body: Body, principal: Principal,
                    credential: Any) -> CallRequest:
        state = request.app[STATE]
        session: Any = None
        if request.content_type == "application/sdp":
            sdp = await body.text()
        elif request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await body.form()
            sdp_field, session_field = form.get("sdp"), form.get("session")
            if not isinstance(sdp_field, str):
                raise ApiError(400, "invalid_sdp", "the form needs an 'sdp' field")
            sdp = sdp_field
            if session_field is not None:
                if not isinstance(session_field, str):
                    raise ApiError(400, "invalid_session", "'session' must be a JSON text field")
                try:
                    session = parse_json(session_field)
                except ApiError:
                    raise ApiError(400, "invalid_session", "'session' is not valid JSON") from None
        else:
            raise ApiError(415, "unsupported_media_type",
                           "send the offer as application/sdp or multipart/form-data")
        return _call_request(state, (credential, session), sdp)


REALTIME_WEBRTC = RealtimeWebRtcEntrance()


def _session_config(admitted: Admitted) -> RealtimeSessionConfig:
    """The session the client asked for, with the instructions the app's hooks chose."""
    config: RealtimeSessionConfig = admitted.request.detail
    config.instructions = admitted.options.system_prompt or config.instructions
    return config


@routes.post("/v1/realtime/calls")
async def create_call(request: web.Request) -> web.Response:
    state = request.app[STATE]
    admitted = await admit(request, state, REALTIME_WEBRTC)
    async with admitted:
        config = _session_config(admitted)
        transport = webrtc_transport(state, admitted.ice_servers)
        call = await assemble_call(
            state.services(), admitted.options, transport, token_subject=admitted.token_subject,
            protocol=_protocol(state, admitted.principal, config, transport="webrtc",
                               max_message_bytes=MAX_CHANNEL_EVENT_BYTES))
        assert admitted.request.sdp is not None
        answer = await answer_offer(state, call, transport, admitted.request.sdp)
        await admitted.started(call)
    return web.Response(status=201, body=answer, content_type="application/sdp",
                        headers={"Location": f"/v1/realtime/calls/{call.id}"})


@routes.post("/v1/realtime/calls/{call_id}/hangup")
async def hangup(request: web.Request) -> web.Response:
    """Like the native page's hang-up beacon: the unguessable call id is the capability, with
    the Origin check; a call on another node of the cluster is ended through its owner."""
    request.app[STATE].auth.check_origin(request)
    await hang_up(request)
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


class RealtimeWebSocketEntrance:
    """`GET /v1/realtime`: the Realtime events and base64 PCM16 audio on a WebSocket."""

    transport = "websocket"
    forwardable = False
    offer = False

    async def authenticate(self, request: web.Request, state: AppState
                           ) -> tuple[Principal, Any]:
        return await _principal(request, state, _ws_token(request))

    async def parse(self, request: web.Request, body: Body, principal: Principal,
                    credential: Any) -> CallRequest:
        wanted = _call_request(request.app[STATE], (credential,), None)
        model = request.query.get("model")
        if model:
            wanted.detail.model = model[:100]
        return wanted


REALTIME_WEBSOCKET = RealtimeWebSocketEntrance()


@routes.get("/v1/realtime")
async def websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    admitted = await admit(request, state, REALTIME_WEBSOCKET)
    async with admitted:
        config = _session_config(admitted)
        ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=MAX_WS_MESSAGE_BYTES,
                                   heartbeat=20)
        await ws.prepare(request)
        transport = WebSocketTransport(ws, config.output_rate)
        call = await assemble_call(
            state.services(), admitted.options, transport, token_subject=admitted.token_subject,
            protocol=_protocol(state, admitted.principal, config, transport="websocket",
                               max_message_bytes=MAX_WS_MESSAGE_BYTES, socket=transport))
        await admitted.started(call)
    reason = await transport.serve()
    await call.close(reason)
    log.info("realtime websocket session ended: %s", call.close_reason)
    return ws
