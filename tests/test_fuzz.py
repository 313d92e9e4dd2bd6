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
