"""Who may start calls: bearer tokens, signed single-use call tokens, allowed origins."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from callbot.loadtest.caller import CallFailed, SyntheticCaller
from callbot.signalling.config import AuthSettings, ConfigError, from_mapping
from callbot.signalling.server.auth import (
    Authenticator,
    InvalidToken,
    MemoryNonceStore,
    mint_call_token,
    verify_call_token,
)
from tests.conftest import TEST_CONFIG

STATIC = "static-operator-token"
SECRET = "embedding-app-signing-secret"
OFFER = {"type": "offer", "sdp": "not an sdp"}  # passes auth, then fails validation: 400

ADMIN = "admin-operator-token"
AUTH = AuthSettings(mode="token", bearer_tokens=(STATIC,), signing_secret=SECRET,
                    admin_tokens=(ADMIN,), allowed_origins=("https://shop.example",))


@pytest.fixture(scope="module")
async def secured(start_server) -> str:
    return await start_server(TEST_CONFIG.replace(auth=AUTH))


async def _post(base: str, headers: dict[str, str] | None = None, body=OFFER):
    async with aiohttp.ClientSession() as http, http.post(
        f"{base}/v1/calls", json=body, headers=headers or {}
    ) as resp:
        return resp.status, await resp.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- tokens, without a server ---------------------------------------------------------------


def test_call_token_round_trip() -> None:
    token = mint_call_token(SECRET, ttl_s=30, subject="user-42")
    payload = verify_call_token(SECRET, token)
    assert payload["sub"] == "user-42"
    assert time.time() + 25 < payload["exp"] <= time.time() + 32  # type: ignore[operator]
    assert len(str(payload["nonce"])) == 32


@pytest.mark.parametrize("mangle", [
    lambda t: t + "x",
    lambda t: "e30" + t[3:],  # another payload, same signature
    lambda t: t.replace(".", ""),
    lambda t: "",
    lambda t: "a.b.c",
])
def test_tampered_tokens_are_refused(mangle) -> None:
    with pytest.raises(InvalidToken):
        verify_call_token(SECRET, mangle(mint_call_token(SECRET)))


def test_wrong_secret_and_expiry() -> None:
    token = mint_call_token(SECRET, ttl_s=5)
    with pytest.raises(InvalidToken, match="signature"):
        verify_call_token("another secret", token)
    with pytest.raises(InvalidToken, match="expired"):
        verify_call_token(SECRET, token, now=time.time() + 10)


def test_nonces_are_single_use_and_pruned() -> None:
    store = MemoryNonceStore()
    assert store.use("a", exp=100, now=0)
    assert not store.use("a", exp=100, now=1)
    for i in range(100):
        store.use(f"n{i}", exp=10, now=5)
    assert len(store) > 64
    store.use("late", exp=1000, now=50)  # everything that expired at 10 is forgotten
    assert len(store) == 2  # "a" (exp 100) and "late"


def test_modes_and_configured_tokens() -> None:
    # The listen address no longer decides (a proxy or an embedding app hides the peer):
    # "auto" is open only per request (see the tests below), and never once a
    # credential is configured.
    assert Authenticator(AuthSettings()).has_credentials is False
    assert Authenticator(AuthSettings(bearer_tokens=("t",))).has_credentials is True
    assert Authenticator(AuthSettings(signing_secret="s")).has_credentials is True


def test_auth_config_from_file_mapping() -> None:
    config = from_mapping({"auth": {"mode": "token", "bearer_tokens": ["a", "b"],
                                    "allowed_origins": "https://a.example,https://b.example"}})
    assert config.auth.bearer_tokens == ("a", "b")
    assert config.auth.allowed_origins == ("https://a.example", "https://b.example")
    with pytest.raises(ConfigError, match="auth.mode"):
        from_mapping({"auth": {"mode": "sometimes"}})


# ---- over HTTP ------------------------------------------------------------------------------


async def test_no_token_is_401(secured: str) -> None:
    status, body = await _post(secured)
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    status, body = await _post(secured, {"Authorization": "Basic dXNlcjpwdw=="})
    assert status == 401


async def test_wrong_token_is_401(secured: str) -> None:
    status, body = await _post(secured, _bearer("guess"))
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    forged = mint_call_token("not the secret")
    assert (await _post(secured, _bearer(forged)))[0] == 401


async def test_static_token_passes(secured: str) -> None:
    status, body = await _post(secured, _bearer(STATIC))
    assert status == 400, body  # auth passed; the offer itself is bad
    assert body["error"]["code"] == "invalid_sdp"


async def test_call_token_is_single_use(secured: str) -> None:
    token = mint_call_token(SECRET, ttl_s=30)
    assert (await _post(secured, _bearer(token)))[0] == 400  # accepted by auth
    status, body = await _post(secured, _bearer(token))
    assert status == 401
    assert "already used" in body["error"]["message"]


async def test_expired_call_token_is_401(secured: str) -> None:
    token = mint_call_token(SECRET, ttl_s=0.001)
    await asyncio.sleep(1.1)  # exp has whole-second resolution
    status, body = await _post(secured, _bearer(token))
    assert status == 401
    assert "expired" in body["error"]["message"]


async def test_origins(secured: str) -> None:
    status, body = await _post(secured, _bearer(STATIC) | {"Origin": "https://evil.example"})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, _ = await _post(secured, _bearer(STATIC) | {"Origin": "https://shop.example"})
    assert status == 400
    # Origin is checked before the token: a foreign page learns nothing about tokens.
    status, _ = await _post(secured, {"Origin": "https://evil.example"})
    assert status == 403


async def test_call_list_needs_an_operator_token(secured: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{secured}/v1/calls") as resp:
            assert resp.status == 401
        async with http.get(f"{secured}/v1/calls", headers=_bearer(mint_call_token(SECRET))
                            ) as resp:
            assert resp.status == 401  # a browser's call token is not an operator's
        async with http.get(f"{secured}/v1/calls", headers=_bearer(STATIC)) as resp:
            assert resp.status == 200
        async with http.get(f"{secured}/healthz") as resp:
            assert resp.status == 200  # health stays open for load balancers


async def test_auto_mode_on_a_public_address_needs_a_token(start_server) -> None:
    # Served on 0.0.0.0, a request for a public name is not local: a token is needed.
    base = await start_server(TEST_CONFIG.replace(host="0.0.0.0"))
    assert (await _post(base, {"Host": "calls.example.com"}))[0] == 401


async def test_loopback_default_needs_no_token(server: str) -> None:
    assert (await _post(server))[0] == 400


async def test_real_call_with_a_signed_token(secured: str) -> None:
    token = mint_call_token(SECRET, ttl_s=30, subject="user-7")
    caller = SyntheticCaller(secured, headers=_bearer(token))
    try:
        call_id = await caller.connect()
        async with aiohttp.ClientSession() as http, http.get(
            f"{secured}/v1/calls", headers=_bearer(ADMIN)
        ) as resp:
            ids = [c["call_id"] for c in (await resp.json())["calls"]]
        assert call_id in ids
    finally:
        await caller.hangup()
    again = SyntheticCaller(secured, headers=_bearer(token))
    try:
        with pytest.raises(CallFailed, match="401"):
            await again.connect()
    finally:
        await again.hangup(delete=False)


# ---- where it is deployed: open only for a real local request, calls scoped to their owner --

TOKEN_A, TOKEN_B = "token-of-a", "token-of-b"
SCOPED_ADMIN, SCOPED_SECRET = "admin-token", "signing-secret"



@pytest.fixture(scope="module")
async def auto_server(start_server) -> str:
    """The default auth mode ("auto"), no token configured."""
    return await start_server(TEST_CONFIG.replace(auth=AuthSettings()))


@pytest.fixture(scope="module")
async def scoped(start_server) -> str:
    return await start_server(TEST_CONFIG.replace(auth=AuthSettings(
        mode="token", bearer_tokens=(TOKEN_A, TOKEN_B), admin_tokens=(SCOPED_ADMIN,),
        signing_secret=SCOPED_SECRET)))


async def test_auto_is_open_only_for_a_plain_local_request(auto_server: str) -> None:
    assert (await _post(auto_server))[0] == 400  # loopback peer, loopback Host: open
    assert (await _post(auto_server, {"Host": "localhost"}))[0] == 400


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-For": "203.0.113.7"},  # a reverse proxy on the same machine
    {"Forwarded": "for=203.0.113.7"},
    {"X-Real-IP": "203.0.113.7"},
    {"Host": "rebound.example"},  # DNS rebinding: a foreign name resolving to 127.0.0.1
    {"Host": "rebound.example:8080"},
    {"Origin": "https://evil.example"},  # a foreign page
])
async def test_auto_needs_a_token_behind_a_proxy_or_for_a_foreign_host(
        auto_server: str, headers: dict[str, str]) -> None:
    status, body = await _post(auto_server, headers)
    assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_configured_tokens_are_always_enforced(start_server) -> None:
    # mode "auto" on loopback with a token configured: the token is required, even locally.
    base = await start_server(TEST_CONFIG.replace(auth=AuthSettings(bearer_tokens=(TOKEN_A,))))
    assert (await _post(base))[0] == 401
    assert (await _post(base, _bearer(TOKEN_A)))[0] == 400


async def test_explicit_none_is_open(start_server) -> None:
    base = await start_server(TEST_CONFIG.replace(auth=AuthSettings(mode="none")))
    assert (await _post(base, {"X-Forwarded-For": "203.0.113.7", "Host": "x.example"}))[0] == 400


async def _raw_post(base: str, auth_value: bytes) -> int:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"type":"offer","sdp":"x"}'
    writer.write(b"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Authorization: " + auth_value + b"\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


@pytest.mark.parametrize("value", [
    "Bearer tökén".encode(), b"Bearer \xff\xfe\xfd", "Bearer 令牌".encode(),
    b"Bearer a.b", b"Bearer \xc3\xa9.\xc3\xa9", b"Bearer " + b"x" * 5000, b"Bearer \x01\x02",
], ids=["latin", "bytes", "cjk", "bad-token", "utf8-token", "long", "control"])
async def test_malformed_credentials_are_401(scoped: str, value: bytes) -> None:
    # 401; a control character is refused by the HTTP parser itself (400), never a 500.
    assert await _raw_post(scoped, value) in ((400,) if b"\x01" in value else (401,))


async def _list(base: str, token: str | None) -> tuple[int, list[str]]:
    async with aiohttp.ClientSession() as http, http.get(
        f"{base}/v1/calls", headers=_bearer(token) if token else {}
    ) as resp:
        data = await resp.json()
        return resp.status, [c["call_id"] for c in data.get("calls", [])]


async def _delete(base: str, call_id: str, token: str) -> int:
    async with aiohttp.ClientSession() as http, http.delete(
        f"{base}/v1/calls/{call_id}", headers=_bearer(token)
    ) as resp:
        return resp.status


async def test_list_and_delete_are_scoped_to_the_caller(scoped: str) -> None:
    call_token = mint_call_token(SCOPED_SECRET, ttl_s=30, subject="user-9")
    callers = [SyntheticCaller(scoped, headers=_bearer(TOKEN_A)),
               SyntheticCaller(scoped, headers=_bearer(call_token))]
    try:
        a_call = await callers[0].connect()
        user_call = await callers[1].connect()
        assert (await _list(scoped, TOKEN_A)) == (200, [a_call])
        assert (await _list(scoped, TOKEN_B)) == (200, [])  # a stranger sees nothing
        assert set((await _list(scoped, SCOPED_ADMIN))[1]) == {a_call, user_call}
        assert (await _list(scoped, None))[0] == 401
        # A stranger cannot end another caller's call: 404, as if it did not exist.
        assert await _delete(scoped, a_call, TOKEN_B) == 404
        assert await _delete(scoped, user_call, TOKEN_A) == 404
        another_user = mint_call_token(SCOPED_SECRET, subject="user-1")
        assert await _delete(scoped, user_call, another_user) == 404
        assert len((await _list(scoped, SCOPED_ADMIN))[1]) == 2
        # The browser hangs up with the (already used) token it called with.
        assert await _delete(scoped, user_call, call_token) == 204
        assert await _delete(scoped, a_call, SCOPED_ADMIN) == 204
        assert (await _list(scoped, SCOPED_ADMIN))[1] == []
    finally:
        for caller in callers:
            await caller.hangup(delete=False)


OPTS = {"type": "offer", "sdp": "not an sdp", "options": {"system_prompt": "Talk like a pirate."}}


async def test_client_prompt_is_off_when_auth_is_off(auto_server: str) -> None:
    status, body = await _post(auto_server, body=OPTS)
    assert (status, body["error"]["code"]) == (403, "prompt_not_allowed")


async def test_client_prompt_policy(start_server, scoped: str) -> None:
    allowed = await _post(scoped, _bearer(TOKEN_A), OPTS)
    assert allowed[1]["error"]["code"] == "invalid_sdp"  # allowed: the SDP is what fails
    deny = await start_server(TEST_CONFIG.replace(auth=AuthSettings(
        bearer_tokens=(TOKEN_A,), client_system_prompt="deny")))
    refused = await _post(deny, _bearer(TOKEN_A), OPTS)
    assert refused[1]["error"]["code"] == "prompt_not_allowed"
    allow = await start_server(TEST_CONFIG.replace(auth=AuthSettings(
        mode="none", client_system_prompt="allow")))
    assert (await _post(allow, body=OPTS))[1]["error"]["code"] == "invalid_sdp"
