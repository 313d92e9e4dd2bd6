"""Who may start a call: static bearer tokens, short-lived signed call tokens, allowed origins.

A signed call token is what an embedding app hands to one browser for one call: the app
shares `auth.signing_secret` with callbot and mints a token per page view with
`mint_call_token(secret, ttl_s=60, subject="user-42")`. The browser sends it as
`Authorization: Bearer <token>`; callbot checks the signature and the expiry, and accepts each
token once.

Token format: `base64url(payload JSON) "." base64url(HMAC-SHA256(secret, payload part))`,
with payload `{"exp": unix seconds, "nonce": random hex, "sub": optional subject}`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from callbot.signalling.config import AuthSettings
from callbot.signalling.errors import ApiError, SignallingError

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 2048


class InvalidToken(SignallingError, ValueError):
    """A call token that is malformed, forged, expired or already used."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload_part: str) -> str:
    return _b64(hmac.new(secret.encode(), payload_part.encode("ascii"), hashlib.sha256).digest())


def mint_call_token(secret: str, ttl_s: float = 60.0, subject: str | None = None) -> str:
    """A signed token that lets its holder start one call within `ttl_s` seconds."""
    if not secret:
        raise ValueError("a signing secret is required")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be greater than 0")
    payload: dict[str, object] = {"exp": int(time.time() + ttl_s) + 1,
                                  "nonce": secrets.token_hex(16)}
    if subject is not None:
        payload["sub"] = subject
    part = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{part}.{_sign(secret, part)}"


def verify_call_token(secret: str, token: str, *, now: float | None = None,
                      check_expiry: bool = True) -> dict[str, object]:
    """The token's payload, if it is signed with `secret` and not expired (raises otherwise).
    Does not check single use: see `NonceStore`."""
    if (len(token) > MAX_TOKEN_CHARS or token.count(".") != 1 or not token.isascii()
            or not token.isprintable()):
        raise InvalidToken("malformed token")
    part, signature = token.split(".")
    if not hmac.compare_digest(_sign(secret, part), signature):
        raise InvalidToken("bad signature")
    try:
        payload = json.loads(_unb64(part))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None
    if not isinstance(payload, dict):
        raise InvalidToken("malformed token")
    exp, nonce, sub = payload.get("exp"), payload.get("nonce"), payload.get("sub")
    if (not isinstance(exp, int | float) or isinstance(exp, bool) or not isinstance(nonce, str)
            or (sub is not None and not isinstance(sub, str))):
        raise InvalidToken("malformed token")
    if check_expiry and (time.time() if now is None else now) >= exp:
        raise InvalidToken("token expired")
    return payload


class NonceStore(Protocol):
    """Where used call-token nonces are remembered. One process: `MemoryNonceStore`; several
    workers or nodes share one store (e.g. Redis) so a token is single-use across all of them."""

    def use(self, nonce: str, exp: float, *, now: float | None = None) -> bool:
        """Record `nonce` until `exp`; False if it was used before."""
        ...


class MemoryNonceStore:
    """Nonces of tokens already used in this process, each kept until its token expires."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def use(self, nonce: str, exp: float, *, now: float | None = None) -> bool:
        """Record `nonce`; False if it was used before."""
        now = time.time() if now is None else now
        if len(self._seen) > 64:
            self._seen = {n: e for n, e in self._seen.items() if e > now}
        if nonce in self._seen:
            return False
        self._seen[nonce] = exp
        return True

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True)
class Principal:
    """Who is calling: `client_id` keys the per-client limits; `owner` is the identity that
    owns the calls it starts (who may list and end them)."""

    client_id: str
    kind: str  # "anonymous" | "token" | "admin" | "call_token"
    subject: str | None = None
    remote: str | None = None
    owner: str = ""
    admin: bool = False
    authenticated: bool = False  # it showed a credential (not the open mode)

    nonce: tuple[str, float] | None = None  # a call token's (nonce, exp): the shared store
    # (signalling/cluster/shared.py) claims it once across workers and nodes

    def owns(self, owner: str) -> bool:
        return self.admin or (bool(self.owner) and hmac.compare_digest(self.owner, owner))


LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
# Headers a reverse proxy adds: their presence means the loopback peer is a proxy for someone.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
                 "X-Real-IP", "Via", "X-Client-IP", "True-Client-IP", "CF-Connecting-IP",
                 "X-Original-Forwarded-For", "Fastly-Client-IP")


def is_loopback(host: str) -> bool:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_part(value: str) -> str:
    """'name:port' / '[::1]:port' / 'name' -> the host."""
    value = value.strip()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def is_local_request(request: web.BaseRequest) -> bool:
    """The actual peer is loopback, no proxy forwarded it, and it names a loopback host (no
    DNS rebinding) from a loopback page (or none): the operator's own machine."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not peer or not isinstance(peer, tuple) or not is_loopback(str(peer[0])):
        return False
    if any(name in request.headers for name in PROXY_HEADERS):
        return False
    host = request.headers.get("Host")
    if host is None or not is_loopback(_host_part(host)):
        return False
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        _, _, rest = origin.partition("://")
        if not is_loopback(_host_part(rest.split("/", 1)[0])):
            return False
    return True


class Authenticator:
    """Mode "none": open. Mode "token": a credential always. Mode "auto" (default): a
    credential unless the request is local (`is_local_request`) and no credential is
    configured — configured tokens are always enforced."""

    def __init__(self, settings: AuthSettings, nonces: NonceStore | None = None) -> None:
        self.settings = settings
        self.nonces: NonceStore = nonces or MemoryNonceStore()
        self._origins = {o.rstrip("/").lower() for o in settings.allowed_origins}
        self.has_credentials = bool(settings.bearer_tokens or settings.admin_tokens
                                    or settings.signing_secret)
        self._warned = False
        if settings.mode == "token" and not self.has_credentials:
            log.warning("auth: tokens are required but none are configured (auth.bearer_tokens "
                        "or auth.signing_secret): every call will be refused")

    def required_for(self, request: web.BaseRequest) -> bool:
        mode = self.settings.mode
        if mode == "none":
            return False
        if mode == "token" or self.has_credentials:
            return True
        return not is_local_request(request)

    def check_origin(self, request: web.BaseRequest) -> None:
        origin = request.headers.get("Origin")
        if self._origins and origin is not None and origin.rstrip("/").lower() not in self._origins:
            raise ApiError(403, "forbidden", "this origin may not start calls")

    def authenticate(self, request: web.BaseRequest, *, purpose: str = "create",
                     allow_call_tokens: bool = True) -> Principal:
        """Check the request's Origin and credentials; 401/403 as ApiError.

        `purpose`: "create" (a call token is spent: single use), "list" (call tokens are
        refused: a browser's token is not an operator's), "manage" (a call token already spent
        still identifies the call it started, expired or not, so the page can hang up),
        "memory" (a credential is always needed, whatever the mode; a call token is checked,
        unexpired, but not spent), "peek" (like "create", but a call token is not spent: the
        page's ICE servers before its call)."""
        self.check_origin(request)
        remote = request.remote or "unknown"
        if not self.required_for(request) and purpose != "memory":
            return Principal(client_id=f"ip:{remote}", kind="anonymous", remote=remote,
                             owner=f"ip:{remote}")
        token = _bearer(request)
        if token is None:
            if not self.has_credentials and not self._warned:
                self._warned = True
                log.warning("auth: a request that is not local (a public address, a proxy "
                            "header or a foreign Host) was refused: no token is configured. "
                            "Set auth.bearer_tokens / auth.signing_secret, or auth.mode = "
                            "\"none\" to run open on purpose")
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
        for admin in self.settings.admin_tokens:
            if hmac.compare_digest(admin.encode(), token.encode()):
                return Principal(client_id=f"token:{_digest(token)}", kind="admin",
                                 remote=remote, owner=f"token:{_digest(token)}", admin=True,
                                 authenticated=True)
        for static in self.settings.bearer_tokens:
            if hmac.compare_digest(static.encode(), token.encode()):
                return Principal(client_id=f"token:{_digest(token)}", kind="token",
                                 remote=remote, owner=f"token:{_digest(token)}",
                                 authenticated=True)
        secret = self.settings.signing_secret
        if secret and purpose != "list" and allow_call_tokens:
            try:
                payload = verify_call_token(secret, token, check_expiry=purpose != "manage")
            except InvalidToken as exc:
                raise ApiError(401, "unauthorized", f"invalid call token: {exc}") from None
            nonce = str(payload["nonce"])
            if purpose == "create" and not self.nonces.use(
                    nonce, float(payload["exp"])):  # type: ignore[arg-type]
                raise ApiError(401, "unauthorized", "this call token was already used")
            sub = payload.get("sub")
            subject = sub if isinstance(sub, str) else None
            return Principal(client_id=f"sub:{subject}" if subject else f"ip:{remote}",
                             kind="call_token", subject=subject, remote=remote,
                             owner=f"sub:{subject}" if subject else f"nonce:{nonce}",
                             authenticated=True,
                             nonce=(nonce, float(payload["exp"])))  # type: ignore[arg-type]
        raise ApiError(401, "unauthorized", "invalid token")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _bearer(request: web.BaseRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        return None
    value = value.strip()
    if (scheme.lower() != "bearer" or not value or len(value) > MAX_TOKEN_CHARS
            or not value.isascii() or not value.isprintable() or " " in value):
        raise ApiError(401, "unauthorized", "malformed credentials: send "
                       "'Authorization: Bearer <token>' with a printable ASCII token")
    return value
