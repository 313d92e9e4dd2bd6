"""Whatever JSON arrives at POST /v1/calls: a 4xx JSON error (or a call), never a 500, and no
call left behind. Also: the OpenAPI document is served."""

from __future__ import annotations

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbot.signalling.config import Limits
from tests.conftest import TEST_CONFIG

SDP_LINES = ["v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=-", "t=0 0",
             "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2",
             "c=IN IP4 0.0.0.0", "a=setup:actpass", "a=mid:0", "\x00", "é"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)
sdps = st.lists(st.sampled_from(SDP_LINES) | st.text(max_size=30), max_size=8).map("\r\n".join)
options = st.none() | json_values | st.fixed_dictionaries({}, optional={
    "system_prompt": json_values | st.text(max_size=50),
    "voice": json_values,
    "language": st.sampled_from(["en", "de", "xx"]) | json_values,
})
bodies = json_values | st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["offer", "answer"]) | json_values,
    "sdp": sdps | json_values,
    "options": options,
})


@pytest.fixture(scope="module")
async def fuzz_server(start_server) -> str:
    return await start_server(TEST_CONFIG.replace(limits=Limits(call_rate_per_minute=100_000)))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
async def test_call_body_never_500(fuzz_server: str, body) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fuzz_server}/v1/calls", json=body) as resp:
            data = await resp.json()
            if resp.status == 201:
                await http.delete(f"{fuzz_server}/v1/calls/{data['call_id']}")
            else:
                assert 400 <= resp.status < 500, (resp.status, data)
                assert set(data["error"]) == {"code", "message"}
        async with http.get(f"{fuzz_server}/healthz") as resp:
            assert (await resp.json())["calls"] == 0


async def test_openapi_document(server: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{server}/v1/openapi.json") as resp:
        spec = await resp.json()
    assert spec["openapi"].startswith("3.1")
    assert {"/v1/calls", "/v1/calls/{call_id}", "/healthz"} <= set(spec["paths"])
    assert "429" in spec["paths"]["/v1/calls"]["post"]["responses"]


# ---- issue 15: pathological bodies, credentials and data-channel messages -------------------

def _nested(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


raw_bodies = (
    st.binary(max_size=300)
    | st.builds(_nested, st.integers(0, 20_000), st.sampled_from(["", "1", '"x"', "{}"]))
    | st.builds(lambda n, neg: '{"type": "offer", "sdp": "v=0", "options": {"voice": '
                + ("-" if neg else "") + "9" * n + "}}", st.integers(1, 30_000), st.booleans())
    | st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", '{"a": 1e400}', '"\\ud800"'])
    | json_values.map(lambda v: __import__("json").dumps(v))
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=raw_bodies)
async def test_raw_body_never_500(fuzz_server: str, raw) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fuzz_server}/v1/calls", data=raw,
                             headers={"Content-Type": "application/json"}) as resp:
            data = await resp.json()
            assert 400 <= resp.status < 500, (resp.status, data)
            assert set(data["error"]) == {"code", "message"}


@pytest.fixture(scope="module")
async def token_server(start_server) -> str:
    from callbot.signalling.config import AuthSettings

    return await start_server(TEST_CONFIG.replace(auth=AuthSettings(
        mode="token", bearer_tokens=("good-token",), admin_tokens=("admin",),
        signing_secret="s3cret")))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.text(max_size=60).filter(lambda t: "\r" not in t and "\n" not in t),
       scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
       method=st.sampled_from(["POST", "GET", "DELETE"]))
async def test_credentials_never_500(token_server: str, value: str, scheme: str,
                                     method: str) -> None:
    header = (scheme + value).encode("utf-8", "surrogatepass")
    url = "/v1/calls" if method != "DELETE" else "/v1/calls/abc"
    host, port = token_server.removeprefix("http://").split(":")
    import asyncio

    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"type":"offer","sdp":"x"}'
    writer.write(f"{method} {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                 f"application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
                 .encode() + b"Authorization: " + header + b"\r\n\r\n" + body)
    await writer.drain()
    status = int((await asyncio.wait_for(reader.readline(), 10)).split()[1])
    writer.close()
    assert status in (400, 401), (header, status)  # 400: the HTTP parser refused the header


channel_messages = (
    st.builds(_nested, st.integers(0, 3000), st.sampled_from(["", "1", '{"type": "x"}']))
    | json_values.map(lambda v: __import__("json").dumps(v))
    | st.fixed_dictionaries({"type": st.sampled_from(["input.text", "response.cancel", "zz"])
                             | st.text(max_size=10)},
                            optional={"text": json_values | st.text(max_size=40)}
                            ).map(lambda v: __import__("json").dumps(v))
    | st.text(max_size=200)
    | st.binary(max_size=50)
)


@pytest.fixture(scope="module")
async def fuzz_call(fuzz_server: str):
    from callbot.loadtest.caller import SyntheticCaller

    caller = SyntheticCaller(fuzz_server)
    await caller.connect()
    yield caller
    await caller.hangup()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=channel_messages)
async def test_channel_messages_never_end_the_call(fuzz_server: str, fuzz_call, message) -> None:
    fuzz_call._channel.send(message)
    async with aiohttp.ClientSession() as http, http.get(f"{fuzz_server}/v1/calls") as resp:
        calls = (await resp.json())["calls"]
    assert [c["state"] for c in calls if c["call_id"] == fuzz_call.call_id] == ["active"]
    assert not [e for e in fuzz_call.events_of("error") if e["code"] == "internal"]
