"""The one way into a call: every entrance (the native `POST /v1/calls`, the OpenAI Realtime
WebRTC and WebSocket routes, a phone line) gets its slot here and nowhere else.

`Admission.admit(request, entrance)` runs the same steps for all of them, in order:

1. the server is not shutting down, and (in a cluster) the shared state is reachable;
2. authenticate (Origin, bearer token, signed call token, or the entrance's own credential),
   then single-use call tokens and the per-client limits (429);
3. read the whole body, bounded (413) and timed (408), and parse it (`safejson`);
4. the client system-prompt policy, for `system_prompt` and Realtime `instructions` alike;
5. the offer guard (m-lines, candidates) for entrances that carry an SDP offer;
6. the options, validated against what the server offers (voices, languages), then the app's
   `options_factory` and per-call ICE servers;
7. a slot under the call limit and the machine's load (503), or in a cluster, the offer handed
   on to a node that has one.

It returns an `Admitted` ticket: the entrance builds the call with it (`calls/assembly.py`),
then says `started(call)`; on any failure before that, leaving the `async with` block
releases the slot and the client's count.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web
from multidict import MultiDictProxy

from callbot.rtc.ice import IceServer
from callbot.rtc.offer_guard import OfferRefused, guard_offer
from callbot.signalling import safejson
from callbot.signalling.calls.call import Call, CallOptions
from callbot.signalling.calls.registry import CallLimitReached
from callbot.signalling.calls.webrtc import WebRtcTransport
from callbot.signalling.cluster.forward import FORWARD_HEADER, forward_offer
from callbot.signalling.cluster.redis_store import RedisStore
from callbot.signalling.cluster.shared import ClusterUnavailable
from callbot.signalling.errors import ApiError
from callbot.signalling.server.auth import Principal

if TYPE_CHECKING:
    from callbot.signalling.server.state import AppState

log = logging.getLogger(__name__)


class Body:
    """The request's body, read whole on first use: bounded and timed, whatever the entrance."""

    def __init__(self, request: web.Request | None, max_bytes: int, timeout_s: float) -> None:
        self._request = request  # None: an entrance without HTTP (a phone line's INVITE)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    @property
    def request(self) -> web.Request:
        if self._request is None:
            raise ApiError(400, "invalid_body", "this entrance has no HTTP body")
        return self._request

    async def read(self) -> bytes:
        return await read_body(self.request, self.max_bytes, self.timeout_s)

    async def json(self) -> Any:
        """The body as JSON (415 unless `application/json`; 400 if invalid or too deep)."""
        if self.request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the body as application/json")
        return parse_json(await self.read())

    async def optional_json(self) -> Any:
        """JSON if there is a body (any content type), else {}."""
        if not self.request.can_read_body:
            return {}
        raw = await self.read()
        return parse_json(raw) if raw.strip() else {}

    async def text(self) -> str:
        raw = await self.read()
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_body", "the body is not UTF-8 text") from None

    async def form(self) -> MultiDictProxy[Any]:
        """A multipart or urlencoded form, bounded (aiohttp's `client_max_size`) and timed."""
        request = self.request
        if request.content_length is not None and request.content_length > self.max_bytes:
            raise ApiError(413, "body_too_large", f"request body is over {self.max_bytes} bytes")
        try:
            async with asyncio.timeout(self.timeout_s):
                return await request.post()
        except TimeoutError:
            raise ApiError(408, "body_timeout", "the request body did not arrive within "
                           f"{self.timeout_s:g} s") from None
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "body_too_large",
                           f"request body is over {self.max_bytes} bytes") from None
        except ValueError as exc:
            raise ApiError(400, "invalid_body", f"the form could not be read: {exc}") from None


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


def parse_json(raw: bytes | str, *, max_depth: int = safejson.MAX_DEPTH) -> Any:
    try:
        return safejson.loads(raw, max_depth=max_depth)
    except safejson.InvalidJson as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON ({exc})") from None


def validate_sdp(sdp: Any, max_sdp_bytes: int) -> str:
    """An SDP offer's text: a session description with an audio m-line, bounded."""
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


@dataclass
class CallRequest:
    """What an entrance read from its request: the per-call choices and, for WebRTC, the offer.

    `prompt`: the client asked for its own system prompt / instructions (the prompt policy
    decides). `detail`: the entrance's own parsed settings (e.g. a Realtime session config)."""

    options: CallOptions = field(default_factory=CallOptions)
    sdp: str | None = None
    prompt: bool = False
    detail: Any = None


# What an entrance reads its call from: an HTTP request, or a phone line's INVITE.
RequestT = TypeVar("RequestT", contravariant=True)


class Entrance(Protocol[RequestT]):
    """One way in: how it authenticates and reads its request. Everything else is shared."""

    transport: str  # "webrtc" | "websocket" | "sip"
    forwardable: bool  # a cluster node without a slot may hand this request on as it is
    offer: bool  # the request carries an SDP offer (WebRTC): it is checked and guarded

    def authenticate(self, request: RequestT, state: AppState
                     ) -> tuple[Principal, Any] | Awaitable[tuple[Principal, Any]]:
        """Who calls, and what their credential carries (e.g. a client secret's session).
        May be async: a Realtime client secret is redeemed in the shared store."""
        ...

    async def parse(self, request: RequestT, body: Body, principal: Principal,
                    credential: Any) -> CallRequest: ...


class Admitted:
    """A reserved slot and the client's count, until the call starts or the entrance fails."""

    def __init__(self, state: AppState, principal: Principal, request: CallRequest,
                 ice_servers: tuple[IceServer, ...]) -> None:
        self._state = state
        self.principal = principal
        self.request = request
        self.options = request.options
        self.ice_servers = ice_servers
        self._done = False

    @property
    def token_subject(self) -> str | None:
        """The `sub` of the signed call token that started this call (caller memory)."""
        principal = self.principal
        return principal.subject if principal.kind == "call_token" else None

    async def __aenter__(self) -> Admitted:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self._done:
            await self.release()

    async def release(self) -> None:
        if self._done:
            return
        self._done = True
        self._state.registry.release_reservation()
        await self._state.store.release(self.principal.client_id)

    async def started(self, call: Call) -> None:
        """The call is up: listed, counted, handed to the app's hooks."""
        if self._done:
            raise RuntimeError("this admission was already used or released")
        self._done = True
        state = self._state
        state.registry.add(call)
        state.metrics.call_started()
        await state.call_started(call, self.principal)


class HandedOn(Exception):
    """A cluster node without a slot forwarded the request: its answer is the response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__("handed on")
        self.response = response


async def admit(request: Any, state: AppState, entrance: Entrance[Any]) -> Admitted:
    """Every step between a request and a slot (see the module's docstring); raises ApiError
    (4xx/5xx) or `HandedOn`. `request` is what `entrance` reads: an aiohttp request, or for
    the phone line its INVITE (no HTTP: the app's request hooks are not asked)."""
    store = state.store
    forwarded = False
    http = request if isinstance(request, web.Request) else None
    if (isinstance(store, RedisStore) and entrance.forwardable and http is not None
            and FORWARD_HEADER in http.headers):
        remote = store.verify_forward(request.headers[FORWARD_HEADER])
        if remote is None:  # forged, stale, or signed with another key (misconfigured)
            state.metrics.call_rejected("forward_rejected")
            raise ApiError(403, "forward_rejected",
                           "a forwarded offer must be signed with this cluster's "
                           "cluster.forward_secret")
        request = http = http.clone(remote=remote)  # a node of this cluster handed it on
        forwarded = True
    reserved = False
    if store.clustered:  # a slot first: a node that has none hands the offer on untouched
        state.refuse_if_unavailable()
        if not state.draining:
            try:
                state.registry.reserve()
                reserved = True
            except CallLimitReached as exc:
                if forwarded or not entrance.forwardable:
                    state.metrics.call_rejected(exc.metric)
                    raise exc.refusal() from None
        if not reserved and not forwarded and entrance.forwardable and http is not None:
            raise HandedOn(await _hand_on(http, state))
    try:
        if state.draining:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        try:
            who = entrance.authenticate(request, state)
            principal, credential = await who if inspect.isawaitable(who) else who
        except ApiError as exc:
            state.metrics.call_rejected(exc.code)
            raise
        await state.admit(principal)  # single-use token (401), per-client limits (429)
    except BaseException:
        if reserved:
            state.registry.release_reservation()
        raise
    try:
        limits = state.config.limits
        body = Body(http, limits.max_body_bytes, limits.body_timeout_s)
        wanted = await entrance.parse(request, body, principal, credential)
        if wanted.prompt and not state.client_prompt_allowed(principal):
            raise ApiError(403, "prompt_not_allowed",
                           "this server does not let clients set 'system_prompt' or "
                           "'instructions' (auth.client_system_prompt)")
        if entrance.offer:
            wanted.sdp = _guard_offer(validate_sdp(wanted.sdp, limits.max_sdp_bytes), state)
        validate_options(wanted.options, state)
        wanted.options = await state.hook_runner.options_for(http, wanted.options)
        ice_servers: tuple[IceServer, ...] = ()
        if http is not None:  # a phone call has no ICE
            ice_servers = await state.ice_servers_for(http, principal)
        if not reserved:
            try:
                state.registry.reserve()
            except CallLimitReached as exc:
                state.metrics.call_rejected(exc.metric)
                raise exc.refusal() from None
    except BaseException:
        if reserved:
            state.registry.release_reservation()
        await store.release(principal.client_id)
        raise
    return Admitted(state, principal, wanted, ice_servers)


def webrtc_transport(state: AppState, ice_servers: tuple[IceServer, ...]) -> WebRtcTransport:
    config = state.config
    return WebRtcTransport(ice_servers, vision=config.vision,
                           max_send_buffer_bytes=config.limits.max_send_buffer_bytes,
                           public_ip=config.ice_public_ip)


async def answer_offer(state: AppState, call: Call, transport: WebRtcTransport,
                       sdp: str) -> str:
    """Negotiate; on any failure the call is closed before the error propagates."""
    try:
        return await transport.answer(sdp)
    except Exception as exc:
        await call.close("negotiation_failed")
        state.metrics.call_rejected("bad_sdp")
        log.info("offer rejected: %s", exc)
        raise ApiError(400, "sdp_rejected", f"the offer could not be used: {exc}") from None
    except BaseException:
        await call.close("negotiation_failed")
        raise


def validate_options(options: CallOptions, state: AppState) -> None:
    """The voice and language a client asked for are ones this server offers."""
    voices = state.engines.tts.voices
    if options.voice is not None and options.voice not in voices:
        raise ApiError(400, "invalid_options", f"'voice' must be one of {list(voices)}")
    languages = state.allowed_languages()
    if options.language is not None and options.language not in languages:
        raise ApiError(400, "invalid_options", f"'language' must be one of {list(languages)}")
    prompt = options.system_prompt
    max_chars = state.config.limits.max_prompt_chars
    if prompt is not None and len(prompt) > max_chars:
        raise ApiError(400, "invalid_options",
                       f"'system_prompt' must be a string of at most {max_chars} characters")


def _guard_offer(sdp: str, state: AppState) -> str:
    limits = state.config.limits
    try:
        return guard_offer(sdp, max_m_lines=limits.max_m_lines,
                           max_candidates=limits.max_remote_candidates,
                           policy=state.candidate_policy)
    except OfferRefused as exc:
        raise ApiError(400, exc.code, str(exc)) from None


async def _hand_on(request: web.Request, state: AppState) -> web.Response:
    """This node is full or draining: the offer goes to the node with most free slots."""
    store = state.store
    assert isinstance(store, RedisStore)
    try:
        target = await store.pick_node()
    except ClusterUnavailable:
        state.refuse_if_unavailable()
        raise
    if target is None or store.forward_key is None:  # no key: this node cannot hand on
        if store.forward_key is None and target is not None:
            log.warning("cluster: full, and no cluster.forward_secret to hand the offer to "
                        "%s with", target)
        state.metrics.call_rejected("capacity")
        raise ApiError(503, "cluster_full", "every node of the cluster is at its call limit; "
                       "try again later", headers={"Retry-After": "5"})
    state.metrics.call_rejected("forwarded")
    signed = store.sign_forward(request.remote or "unknown")
    return await forward_offer(request, store.http(), target, signed)

