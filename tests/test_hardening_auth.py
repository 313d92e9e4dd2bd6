"""Auth that holds where it is deployed (issue 15): the open mode only for a real local
request, tokens always enforced once configured, calls scoped to their owner, an admin token
for the full list, malformed credentials are 401, the client `system_prompt` policy."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from callbot.loadtest.caller import SyntheticCaller
from callbot.signalling.config import AuthSettings
from callbot.signalling.server.auth import mint_call_token
from tests.conftest import TEST_CONFIG

BAD_OFFER = {"type": "offer", "sdp": "not an sdp"}  # passes auth, then fails validation: 400
A, B, ADMIN, SECRET = "token-of-a", "token-of-b", "admin-token", "signing-secret"


async def _post(base: str, headers: dict[str, str] | None = None, body=BAD_OFFER):
    async with aiohttp.ClientSession() as http, http.post(
        f"{base}/v1/calls", json=body, headers=headers or {}
    ) as resp:
        return resp.status, await resp.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def auto_server(start_server) -> str:
    """The default auth mode ("auto"), no token configured."""
    return await start_server(TEST_CONFIG.replace(auth=AuthSettings()))


@pytest.fixture(scope="module")
async def scoped(start_server) -> str:
    return await start_server(TEST_CONFIG.replace(auth=AuthSettings(
        mode="token", bearer_tokens=(A, B), admin_tokens=(ADMIN,), signing_secret=SECRET)))


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
    base = await start_server(TEST_CONFIG.replace(auth=AuthSettings(bearer_tokens=(A,))))
    assert (await _post(base))[0] == 401
    assert (await _post(base, _bearer(A)))[0] == 400


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
    call_token = mint_call_token(SECRET, ttl_s=30, subject="user-9")
    callers = [SyntheticCaller(scoped, headers=_bearer(A)),
               SyntheticCaller(scoped, headers=_bearer(call_token))]
    try:
        a_call = await callers[0].connect()
        user_call = await callers[1].connect()
        assert (await _list(scoped, A)) == (200, [a_call])
        assert (await _list(scoped, B)) == (200, [])  # a stranger sees nothing
        assert set((await _list(scoped, ADMIN))[1]) == {a_call, user_call}
        assert (await _list(scoped, None))[0] == 401
        # A stranger cannot end another caller's call: 404, as if it did not exist.
        assert await _delete(scoped, a_call, B) == 404
        assert await _delete(scoped, user_call, A) == 404
        assert await _delete(scoped, user_call, mint_call_token(SECRET, subject="user-1")) == 404
        assert len((await _list(scoped, ADMIN))[1]) == 2
        # The browser hangs up with the (already used) token it called with.
        assert await _delete(scoped, user_call, call_token) == 204
        assert await _delete(scoped, a_call, ADMIN) == 204
        assert (await _list(scoped, ADMIN))[1] == []
    finally:
        for caller in callers:
            await caller.hangup(delete=False)


OPTS = {"type": "offer", "sdp": "not an sdp", "options": {"system_prompt": "Talk like a pirate."}}


async def test_client_prompt_is_off_when_auth_is_off(auto_server: str) -> None:
    status, body = await _post(auto_server, body=OPTS)
    assert (status, body["error"]["code"]) == (403, "prompt_not_allowed")


async def test_client_prompt_policy(start_server, scoped: str) -> None:
    assert (await _post(scoped, _bearer(A), OPTS))[1]["error"]["code"] == "invalid_sdp"  # allowed
    deny = await start_server(TEST_CONFIG.replace(auth=AuthSettings(
        bearer_tokens=(A,), client_system_prompt="deny")))
    assert (await _post(deny, _bearer(A), OPTS))[1]["error"]["code"] == "prompt_not_allowed"
    allow = await start_server(TEST_CONFIG.replace(auth=AuthSettings(
        mode="none", client_system_prompt="allow")))
    assert (await _post(allow, body=OPTS))[1]["error"]["code"] == "invalid_sdp"
