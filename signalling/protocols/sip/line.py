"""The phone line: a SIP user agent server that turns each INVITE into a call.

Every INVITE goes through `server/admission.admit` (the peer allow-list or digest auth, the
per-caller and call limits, overload, draining) with `SipEntrance`, then the conversation is
built by `calls/assembly.assemble_call` on a `SipTransport`; only then is it answered (200 OK
with the G.711 answer). A refused INVITE gets its SIP response (401/403/486/488/503) and leaves
nothing behind: no RTP port, no dialog, no slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortp import PortAllocator, RTPSession
from aiosipua import (
    IncomingCall,
    SdpNegotiationError,
    SipRequest,
    SipUAS,
    UdpSipTransport,
    negotiate_sdp,
    parse_auth,
)

from callbot.signalling.calls.assembly import assemble_call
from callbot.signalling.calls.call import Call, CallOptions
from callbot.signalling.config import SipSettings
from callbot.signalling.errors import ApiError
from callbot.signalling.protocols.sip.transport import SipTransport
from callbot.signalling.server.admission import Body, CallRequest, admit
from callbot.signalling.server.auth import Principal

if TYPE_CHECKING:
    from callbot.signalling.server.state import AppState

log = logging.getLogger(__name__)

G711 = [0, 8]  # PCMU (µ-law), PCMA (A-law): what every phone and trunk speaks
DTMF_PT = 101
NONCE_TTL_S = 300.0


@dataclass
class PhoneInvite:
    """What the SIP entrance admits: one INVITE and where it came from."""

    call: IncomingCall
    peer: tuple[str, int]


class SipEntrance:
    """Admission's view of an INVITE: who may call (allow-list, digest) and the options."""

    transport = "sip"
    forwardable = False  # an INVITE is answered where it arrived
    offer = False  # the SDP is G.711, checked here rather than by the WebRTC offer guard

    def __init__(self, settings: SipSettings) -> None:
        self.settings = settings
        self._networks = [ipaddress.ip_network(n, strict=False) for n in settings.allow]
        self._secret = os.urandom(16)  # signs this process's nonces (stateless challenges)

    def authenticate(self, request: PhoneInvite, state: AppState) -> tuple[Principal, Any]:
        settings = self.settings
        ip = request.peer[0]
        if self._networks and not any(_in(ip, n) for n in self._networks):
            raise ApiError(403, "forbidden_peer", f"SIP peer {ip} is not in sip.allow")
        if settings.username is not None:
            self._check_digest(request.call.invite)
        user = _caller_user(request.call)
        return Principal(
            client_id=f"sip:{user}@{ip}", kind="sip", subject=request.call.caller, remote=ip,
            authenticated=bool(self._networks) or settings.username is not None), None

    async def parse(self, request: PhoneInvite, body: Body, principal: Principal,
                    credential: Any) -> CallRequest:
        offer = request.call.sdp_offer
        if offer is None or offer.rtp_address is None:
            raise ApiError(488, "no_sdp", "the INVITE has no audio offer")
        try:  # a G.711 codec in the offer, or 488 before any port is taken
            negotiate_sdp(offer, local_ip="0.0.0.0", rtp_port=9, supported_codecs=G711)
        except SdpNegotiationError as exc:
            raise ApiError(488, "codec", str(exc)) from None
        settings = self.settings
        return CallRequest(options=CallOptions(system_prompt=settings.system_prompt,
                                               voice=settings.voice))

    # ---- digest auth (RFC 3261 22.4, MD5 with or without qop=auth) --------------------------

    def _nonce(self) -> str:
        stamp = str(int(time.time()))
        return f"{stamp}.{self._sign(stamp)}"

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]

    def _challenge(self, stale: bool = False) -> ApiError:
        header = (f'Digest realm="{self.settings.realm}", nonce="{self._nonce()}", '
                  f'algorithm=MD5, qop="auth"' + (", stale=true" if stale else ""))
        return ApiError(401, "unauthorized", "SIP digest credentials required",
                        headers={"WWW-Authenticate": header})

    def _check_digest(self, invite: SipRequest) -> None:
        raw = invite.get_header("authorization")
        if not raw:
            raise self._challenge()
        try:
            params = parse_auth(raw).params
        except Exception:
            raise self._challenge() from None
        nonce = params.get("nonce", "")
        stamp, _, mac = nonce.partition(".")
        if not stamp.isdigit() or not hmac.compare_digest(mac, self._sign(stamp)):
            raise self._challenge()
        if time.time() - int(stamp) > NONCE_TTL_S:
            raise self._challenge(stale=True)
        settings = self.settings
        assert settings.username is not None and settings.password is not None
        if params.get("username") != settings.username:
            raise ApiError(403, "forbidden", "wrong SIP credentials")

        def md5(text: str) -> str:
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        ha1 = md5(f"{settings.username}:{params.get('realm', '')}:{settings.password}")
        ha2 = md5(f"INVITE:{params.get('uri', '')}")
        if params.get("qop"):
            expected = md5(f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:"
                           f"{params['qop']}:{ha2}")
        else:
            expected = md5(f"{ha1}:{nonce}:{ha2}")
        if (params.get("realm") != settings.realm
                or not hmac.compare_digest(expected, params.get("response", ""))):
            raise ApiError(403, "forbidden", "wrong SIP credentials")


def _in(ip: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(ip) in network
    except ValueError:
        return False


def _caller_user(call: IncomingCall) -> str:
    """The user part of the From URI (the caller's number), bounded, for per-caller limits."""
    uri = call.caller
    user = uri.split(":", 1)[-1].split("@", 1)[0] if "@" in uri else "anonymous"
    return "".join(ch for ch in user if ch.isalnum() or ch in "+-_.")[:40] or "anonymous"


def sip_refusal(exc: ApiError) -> tuple[int, str, dict[str, str]]:
    """The SIP response for a refused INVITE."""
    headers = dict(exc.headers or {})
    if exc.status == 401:
        return 401, "Unauthorized", headers
    if exc.status == 403:
        return 403, "Forbidden", {}
    if exc.status == 488:
        return 488, "Not Acceptable Here", {}
    if exc.status == 429 or exc.code == "too_many_calls":
        return 486, "Busy Here", {}  # the line (or this caller's share of it) is busy
    if exc.status == 503:
        return 503, "Service Unavailable", {"Retry-After": headers.get("Retry-After", "5")}
    if 400 <= exc.status < 500:
        return 400, "Bad Request", {}
    return 500, "Server Internal Error", {}


class SipLine:
    """The SIP listener of one app (`callbot serve --sip HOST:PORT`)."""

    def __init__(self, state: AppState, settings: SipSettings) -> None:
        self.state = state
        self.settings = settings
        self.entrance = SipEntrance(settings)
        self.ports = PortAllocator((settings.rtp_port_min, settings.rtp_port_max))
        self._sip = UdpSipTransport()
        self._sip.local_addr = (settings.host, settings.port)
        self.uas: SipUAS | None = None
        self.calls: dict[str, Call] = {}  # by SIP Call-ID
        self._pending: set[str] = set()  # INVITEs being admitted or assembled
        self._cancelled: set[str] = set()  # CANCELled while being set up
        self._tasks: set[asyncio.Task[None]] = set()
        self.refusals: dict[int, int] = {}  # SIP status -> count (tests, metrics)

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the bound port when configured as 0)."""
        udp = self._sip._udp_transport
        if udp is not None:
            host, port = udp.get_extra_info("sockname")[:2]
            return str(host), int(port)
        return self._sip.local_addr

    @property
    def ports_in_use(self) -> int:
        return len(self.ports._allocated)

    async def start(self) -> None:
        self.uas = uas = SipUAS(self._sip, user_agent="callbot",
                                advertised_addr=self._advertised())
        uas.on_invite = self._on_invite
        uas.on_bye = self._on_bye
        uas.on_cancel = self._on_cancel
        uas.on_ack_timeout = self._on_ack_timeout
        await uas.start()
        self._sip.local_addr = self.address
        if self.settings.public_ip is not None:
            uas.advertised_addr = (self.settings.public_ip, self.address[1])
        log.info("SIP line listening on udp %s:%d", *self.address)

    def _advertised(self) -> tuple[str, int] | None:
        if self.settings.public_ip is None:
            return None
        return (self.settings.public_ip, self.settings.port)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.uas is not None:
            await self.uas.stop()

    # ---- from the UAS -------------------------------------------------------------------------

    def _on_invite(self, call: IncomingCall) -> None:
        task = asyncio.ensure_future(self._answer(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_bye(self, dialog: IncomingCall, request: SipRequest) -> None:
        self._remote_end(dialog.call_id, "caller_hangup")

    def _on_cancel(self, request: SipRequest, addr: tuple[str, int]) -> None:
        call_id = request.call_id or ""
        if call_id in self._pending:
            self._cancelled.add(call_id)
        self._remote_end(call_id, "caller_cancelled")

    def _on_ack_timeout(self, dialog: IncomingCall) -> None:
        call = self.calls.get(dialog.call_id)
        if call is not None:
            call.spawn_close("no_ack")

    def _remote_end(self, sip_call_id: str, reason: str) -> None:
        call = self.calls.get(sip_call_id)
        if call is None:
            return
        transport = call.transport
        if isinstance(transport, SipTransport):
            transport.remote_ended = True  # the caller ended the dialog: no BYE back
        call.spawn_close(reason)

    # ---- an INVITE, admitted and answered, or refused ---------------------------------------

    def _forget(self, dialog: IncomingCall) -> None:
        """The dialog leaves the UAS's tables (a refused or ended call leaks nothing)."""
        uas = self.uas
        if uas is not None:
            uas._calls.pop(dialog.call_id, None)
            uas._remove_invite_transaction(dialog.invite)
        self.calls.pop(dialog.call_id, None)

    def _refuse(self, dialog: IncomingCall, status: int, reason: str,
                headers: dict[str, str] | None = None) -> None:
        self.refusals[status] = self.refusals.get(status, 0) + 1
        try:
            dialog._stop_retransmissions()
            dialog._send_response(status, reason, extra_headers=headers or None)
            dialog.dialog.terminate()
        except Exception as exc:  # nowhere to send it (no Via): nothing more to do
            log.debug("SIP response %d not sent: %s", status, exc)
        self._forget(dialog)

    async def _answer(self, dialog: IncomingCall) -> None:
        sip_id = dialog.call_id
        if sip_id in self.calls or sip_id in self._pending:
            return  # a retransmitted INVITE: the first one is being answered
        self._pending.add(sip_id)
        try:
            await self._admit_and_answer(dialog)
        except Exception:
            log.exception("SIP call %s failed to start", sip_id)
            self._refuse(dialog, 500, "Server Internal Error")
        finally:
            self._pending.discard(sip_id)
            self._cancelled.discard(sip_id)

    async def _admit_and_answer(self, dialog: IncomingCall) -> None:
        state = self.state
        try:
            admitted = await admit(PhoneInvite(dialog, dialog.source_addr), state,
                                   self.entrance)
        except ApiError as exc:
            status, reason, headers = sip_refusal(exc)
            log.info("INVITE from %s refused: %d (%s)", dialog.source_addr[0], status, exc.code)
            return self._refuse(dialog, status, reason, headers)
        async with admitted:  # any failure below gives the slot back
            try:
                rtp_port, _ = await self.ports.allocate()
            except RuntimeError:
                state.metrics.call_rejected("rtp_ports")
                return self._refuse(dialog, 503, "Service Unavailable", {"Retry-After": "5"})
            released = False

            async def release() -> None:
                nonlocal released
                if not released:
                    released = True
                    await self.ports.release(rtp_port)
                    self._forget(dialog)

            rtp: RTPSession | None = None
            try:
                offer = dialog.sdp_offer
                assert offer is not None and offer.rtp_address is not None  # the entrance's check
                settings = self.settings
                answer, payload_type = negotiate_sdp(
                    offer, local_ip=settings.public_ip or self.address[0], rtp_port=rtp_port,
                    supported_codecs=G711, dtmf_payload_type=DTMF_PT, session_name="callbot")
                rtp = await RTPSession.create(
                    local_addr=(settings.host, rtp_port), remote_addr=offer.rtp_address,
                    payload_type=payload_type, clock_rate=8000, dtmf_payload_type=DTMF_PT,
                    jitter_prefetch=2)
                transport = SipTransport(dialog, rtp, rtp_port=rtp_port, release=release)
                if dialog.call_id in self._cancelled:
                    raise _Cancelled()
                call = await assemble_call(state.services(), admitted.options, transport)
            except BaseException as exc:
                if rtp is not None:
                    await rtp.close()
                await release()
                if isinstance(exc, _Cancelled):
                    return None
                raise
            self.calls[dialog.call_id] = call
            if dialog.call_id in self._cancelled:  # CANCEL arrived during the assembly
                await admitted.started(call)
                await call.close("caller_cancelled")
                return None
            dialog.accept(answer)
            await admitted.started(call)
            log.info("SIP call %s from %s answered (%s, RTP port %d)", call.id,
                     dialog.caller, "PCMU" if payload_type == 0 else "PCMA", rtp_port)
        return None


class _Cancelled(Exception):
    pass
