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

from aiohttp import web

from .config import AuthSettings
from .errors import ApiError, SignallingError

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


def verify_call_token(secret: str, token: str, *, now: float | None = None) -> dict[str, object]:
    """The token's payload, if it is signed with `secret` and not expired (raises otherwise).
    Does not check single use: see `NonceStore`."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
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
    if (time.time() if now is None else now) >= exp:
        raise InvalidToken("token expired")
    return payload


class NonceStore:
    """Nonces of tokens already used, each kept until its token expires."""

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
    """Who is calling: `client_id` keys the per-client limits."""

    client_id: str
    kind: str  # "anonymous" | "token" | "call_token"
    subject: str | None = None
    remote: str | None = None
    nonce: tuple[str, float] | None = None  # a call token's (nonce, exp): the shared store
    # (signalling/shared.py) claims it once across workers and nodes


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator:
    def __init__(self, settings: AuthSettings, listen_host: str) -> None:
        self.settings = settings
        mode = settings.mode
        if mode == "auto":
            mode = "none" if is_loopback(listen_host) else "token"
        self.required = mode == "token"
        self.nonces = NonceStore()
        self._origins = {o.rstrip("/").lower() for o in settings.allowed_origins}
        if self.required and not settings.bearer_tokens and not settings.signing_secret:
            log.warning("auth: tokens are required but none are configured (auth.bearer_tokens "
                        "or auth.signing_secret): every call will be refused")

    def check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if self._origins and origin is not None and origin.rstrip("/").lower() not in self._origins:
            raise ApiError(403, "forbidden", "this origin may not start calls")

    def authenticate(self, request: web.Request, *, allow_call_tokens: bool = True) -> Principal:
        """Check the request's Origin and credentials; 401/403 as ApiError."""
        self.check_origin(request)
        remote = request.remote or "unknown"
        if not self.required:
            return Principal(client_id=f"ip:{remote}", kind="anonymous", remote=remote)
        token = _bearer(request)
        if token is None:
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
        for static in self.settings.bearer_tokens:
            if hmac.compare_digest(static.encode(), token.encode()):
                digest = hashlib.sha256(token.encode()).hexdigest()[:12]
                return Principal(client_id=f"token:{digest}", kind="token", remote=remote)
        secret = self.settings.signing_secret
        if secret and allow_call_tokens:
            try:
                payload = verify_call_token(secret, token)
            except InvalidToken as exc:
                raise ApiError(401, "unauthorized", f"invalid call token: {exc}") from None
            if not self.nonces.use(str(payload["nonce"]), float(payload["exp"])):  # type: ignore[arg-type]
                raise ApiError(401, "unauthorized", "this call token was already used")
            sub = payload.get("sub")
            client = f"sub:{sub}" if isinstance(sub, str) else f"ip:{remote}"
            return Principal(client_id=client, kind="call_token",
                             subject=sub if isinstance(sub, str) else None, remote=remote,
                             nonce=(str(payload["nonce"]), float(payload["exp"])))  # type: ignore[arg-type]
        raise ApiError(401, "unauthorized", "invalid token")


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
