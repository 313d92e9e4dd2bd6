"""The HTTP contract of the call API: every bad input gets its 4xx with a JSON error body and
leaves nothing behind; the concurrency cap, DELETE, health, metrics and unknown paths."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from callbot.loadtest.caller import SyntheticCaller
from callbot.signalling.config import AuthSettings, CallbotConfig, Limits
from tests.conftest import LOOPBACK, ServerFactory

# One call at most; the per-client set-up rate is out of the way of the ~70 offers sent here
# (the per-client concurrency limit, 4, stays: a leaked count would show as 429).
# Clients may set `system_prompt` here (off by default without auth) so its checks are tested.
ONE_CALL = CallbotConfig(
    ice_hosts=(LOOPBACK,), limits=Limits(max_calls=1, call_rate_per_minute=100_000),
    auth=AuthSettings(client_system_prompt="allow"),
)
JSON = "application/json"
# Passes the cheap checks (v=0, an audio m-line) but aiortc cannot use it.
CHEAP_SDP = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


@pytest.fixture(scope="module")
async def one_call_server(start_server: ServerFactory) -> str:
    return await start_server(ONE_CALL)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def real_offer() -> tuple[RTCPeerConnection, str]:
    """A valid offer from a real aiortc peer: audio both ways and the 'events' channel."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def offer_body(sdp: str = CHEAP_SDP, **extra: Any) -> bytes:
    return json.dumps({"type": "offer", "sdp": sdp, **extra}).encode()


async def expect_error(resp: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == JSON, text
    body = json.loads(text)
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


async def list_calls(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/v1/calls") as resp:
        assert resp.status == 200
        return (await resp.json())["calls"]


BAD_REQUESTS: list[tuple[str, bytes, str, int, str]] = [
    # (id, body, content type, status, code)
    ("malformed_json", b'{"type": "offer", "sdp": ', JSON, 400, "invalid_json"),
    ("not_utf8", b'{"sdp": "\xff\xfe"}', JSON, 400, "invalid_json"),
    ("empty_body", b"", JSON, 400, "invalid_json"),
    ("body_is_list", b'["offer"]', JSON, 400, "invalid_request"),
    ("body_is_string", b'"offer"', JSON, 400, "invalid_request"),
    ("body_is_null", b"null", JSON, 400, "invalid_request"),
    ("missing_sdp", b'{"type": "offer"}', JSON, 400, "invalid_sdp"),
    ("empty_sdp", offer_body(""), JSON, 400, "invalid_sdp"),
    ("blank_sdp", offer_body("  \r\n "), JSON, 400, "invalid_sdp"),
    ("sdp_not_string", b'{"type": "offer", "sdp": 42}', JSON, 400, "invalid_sdp"),
    ("sdp_is_object", b'{"type": "offer", "sdp": {"v": 0}}', JSON, 400, "invalid_sdp"),
    ("missing_type", json.dumps({"sdp": CHEAP_SDP}).encode(), JSON, 400, "invalid_request"),
    ("type_answer", json.dumps({"type": "answer", "sdp": CHEAP_SDP}).encode(), JSON, 400,
     "invalid_request"),
    ("sdp_not_sdp", offer_body("hello"), JSON, 400, "invalid_sdp"),
    ("sdp_lone_surrogate", b'{"type": "offer", "sdp": "v=0\\r\\nm=audio \\ud800"}', JSON, 400,
     "invalid_sdp"),
    ("text_plain", offer_body(), "text/plain", 415, "unsupported_media_type"),
    ("form", b"type=offer&sdp=v%3D0", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type"),
    ("body_too_large", offer_body("v=0\r\n" + "a=x\r\n" * 20_000), JSON, 413, "body_too_large"),
    ("sdp_too_large", offer_body("v=0\r\nm=audio 9 RTP/AVP 0\r\n" + "a=x:" + "y" * 66_000), JSON,
     413, "sdp_too_large"),
    ("no_audio", offer_body("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"), JSON, 400, "no_audio"),
    ("sdp_rejected", offer_body(CHEAP_SDP), JSON, 400, "sdp_rejected"),
    ("sdp_rejected_junk_lines", offer_body("v=0\r\nm=audio x y z\r\nc=IN IP4\r\na=rtpmap:\r\n"),
     JSON, 400, "sdp_rejected"),
    ("options_not_object", offer_body(options=["voice"]), JSON, 400, "invalid_options"),
    ("options_unknown_key", offer_body(options={"temperature": 2}), JSON, 400, "invalid_options"),
    ("options_bad_voice", offer_body(options={"voice": "no-such-voice"}), JSON, 400,
     "invalid_options"),
    ("options_voice_not_string", offer_body(options={"voice": ["x"]}), JSON, 400,
     "invalid_options"),
    ("options_long_prompt", offer_body(options={"system_prompt": "x" * 2001}), JSON, 400,
     "invalid_options"),
    ("options_prompt_not_string", offer_body(options={"system_prompt": 5}), JSON, 400,
     "invalid_options"),
    ("options_bad_language", offer_body(options={"language": "xx"}), JSON, 400,
     "invalid_options"),
    ("options_language_not_allowed", offer_body(options={"language": "de"}), JSON, 400,
     "invalid_options"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_offer_gets_json_4xx_and_leaves_no_call(
    one_call_server: str, http: aiohttp.ClientSession,
    body: bytes, content_type: str, status: int, code: str,
) -> None:
    async with http.post(f"{one_call_server}/v1/calls", data=body,
                         headers={"Content-Type": content_type}) as resp:
        await expect_error(resp, status, code)
    assert await list_calls(http, one_call_server) == []


async def test_oversized_chunked_body_is_413(
    one_call_server: str, http: aiohttp.ClientSession
) -> None:
    """No Content-Length: the limit must still hold while reading."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "offer", "sdp": "v=0'
        for _ in range(200):
            yield b"a" * 1024
        yield b'"}'

    async with http.post(f"{one_call_server}/v1/calls", data=chunks(),
                         headers={"Content-Type": JSON}) as resp:
        await expect_error(resp, 413, "body_too_large")
    assert await list_calls(http, one_call_server) == []


async def test_bad_requests_leak_no_reservation(
    one_call_server: str, http: aiohttp.ClientSession
) -> None:
    """After all the refused offers above, the one slot of a max_calls=1 server is free."""
    for _, body, content_type, _, _ in BAD_REQUESTS:
        async with http.post(f"{one_call_server}/v1/calls", data=body,
                             headers={"Content-Type": content_type}) as resp:
            assert 400 <= resp.status < 500
    pc, sdp = await real_offer()
    try:
        async with http.post(f"{one_call_server}/v1/calls",
                             json={"type": "offer", "sdp": sdp}) as resp:
            assert resp.status == 201, await resp.text()
            answer = await resp.json()
        assert answer["type"] == "answer" and answer["sdp"].startswith("v=0")
        assert [c["call_id"] for c in await list_calls(http, one_call_server)] == [
            answer["call_id"]
        ]
        async with http.delete(f"{one_call_server}/v1/calls/{answer['call_id']}") as resp:
            assert resp.status == 204
    finally:
        await pc.close()
    assert await list_calls(http, one_call_server) == []


async def test_call_cap_gives_503_until_hang_up(
    one_call_server: str, http: aiohttp.ClientSession
) -> None:
    caller = SyntheticCaller(one_call_server)
    try:
        call_id = await caller.connect()
        pc, sdp = await real_offer()
        try:
            async with http.post(f"{one_call_server}/v1/calls",
                                 json={"type": "offer", "sdp": sdp}) as resp:
                await expect_error(resp, 503, "too_many_calls")
        finally:
            await pc.close()
        calls = await list_calls(http, one_call_server)
        assert [c["call_id"] for c in calls] == [call_id]
        assert calls[0]["state"] == "active"
        async with http.get(f"{one_call_server}/metrics") as resp:
            assert 'callbot_call_rejections_total{reason="capacity"}' in await resp.text()
    finally:
        await caller.hangup()
    assert await list_calls(http, one_call_server) == []
    # The slot is free again: a new call gets through and connects.
    again = SyntheticCaller(one_call_server)
    try:
        await again.connect()
    finally:
        await again.hangup()
    assert await list_calls(http, one_call_server) == []


async def test_delete_unknown_call_is_404(
    one_call_server: str, http: aiohttp.ClientSession
) -> None:
    async with http.delete(f"{one_call_server}/v1/calls/does-not-exist") as resp:
        await expect_error(resp, 404, "call_not_found")


async def test_delete_live_call(one_call_server: str, http: aiohttp.ClientSession) -> None:
    caller = SyntheticCaller(one_call_server)
    try:
        call_id = await caller.connect()
        assert call_id in [c["call_id"] for c in await list_calls(http, one_call_server)]
        async with http.delete(f"{one_call_server}/v1/calls/{call_id}") as resp:
            assert resp.status == 204
        assert await list_calls(http, one_call_server) == []
        async with http.delete(f"{one_call_server}/v1/calls/{call_id}") as resp:  # gone now
            await expect_error(resp, 404, "call_not_found")
    finally:
        await caller.hangup(delete=False)


async def test_beacon_hangup_counts_as_hangup(
    one_call_server: str, http: aiohttp.ClientSession
) -> None:
    """`POST /v1/calls/{id}/hangup` is DELETE for a page's `navigator.sendBeacon`."""
    async with http.post(f"{one_call_server}/v1/calls/nope/hangup", data="") as resp:
        await expect_error(resp, 404, "call_not_found")
    caller = SyntheticCaller(one_call_server)
    try:
        call_id = await caller.connect()
        async with http.get(f"{one_call_server}/metrics") as resp:
            before = await resp.text()
        # sendBeacon sends text/plain with an empty body
        async with http.post(f"{one_call_server}/v1/calls/{call_id}/hangup", data="",
                             headers={"Content-Type": "text/plain"}) as resp:
            assert resp.status == 204
        assert await list_calls(http, one_call_server) == []
        async with http.get(f"{one_call_server}/metrics") as resp:
            after = await resp.text()
        key = 'callbot_calls_ended_total{reason="hangup"}'
        count = {t: float(next((ln.split()[-1] for ln in text.splitlines()
                                if ln.startswith(key)), "0")) for t, text in
                 (("before", before), ("after", after))}
        assert count["after"] == count["before"] + 1, count
    finally:
        await caller.hangup(delete=False)


async def test_healthz(one_call_server: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{one_call_server}/healthz") as resp:
        assert resp.status == 200
        assert resp.content_type == JSON
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["max_calls"] == 1
    assert body["calls"] == 0
    assert body["voices"]


async def test_metrics(one_call_server: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{one_call_server}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "callbot_active_calls 0.0" in text
    assert "callbot_call_rejections_total" in text


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/no/such/path", 404, "not_found"),
    ("POST", "/v1/call", 404, "not_found"),
    ("PUT", "/v1/calls/abc", 405, "method_not_allowed"),
    ("GET", "/v1/calls/abc", 404, "call_not_found"),  # a call's entry, none with that id
    ("PUT", "/v1/calls", 405, "method_not_allowed"),
])
async def test_unknown_routes_are_json(
    one_call_server: str, http: aiohttp.ClientSession,
    method: str, path: str, status: int, code: str,
) -> None:
    async with http.request(method, f"{one_call_server}{path}") as resp:
        await expect_error(resp, status, code)
