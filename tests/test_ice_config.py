"""Per-call ICE servers from an embedder's factory, and announcing a public IP (NAT 1:1)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from callbot.loadtest.caller import CallFailed, SyntheticCaller
from callbot.pipeline.engines import Engines
from callbot.rtc.ice import IceServer, announce_public_ip
from callbot.signalling.app import create_app
from callbot.signalling.calls.hooks import CallHooks
from callbot.signalling.config import CallbotConfig, ConfigError, Limits, from_mapping
from callbot.signalling.server.state import STATE
from tests.conftest import TEST_CONFIG, ServerFactory

CONFIG = TEST_CONFIG.replace(
    limits=Limits(call_rate_per_minute=100_000),
    ice_servers=(IceServer(urls=("stun:127.0.0.1:9",)),),
)

ANSWER = "\r\n".join([
    "v=0",
    "o=- 1 1 IN IP4 0.0.0.0",
    "s=-",
    "t=0 0",
    "m=audio 50123 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 10.0.0.5",
    "a=candidate:a1 1 udp 2130706431 10.0.0.5 50123 typ host",
    "a=candidate:b2 1 udp 1694498815 198.51.100.7 50123 typ srflx raddr 10.0.0.5 rport 50123",
    "a=candidate:c3 1 tcp 1518280447 10.0.0.5 9 typ host tcptype passive",
    "a=end-of-candidates",
    "",
])


def test_announce_public_ip_rewrites_host_candidates_only() -> None:
    out = announce_public_ip(ANSWER, "203.0.113.9")
    lines = out.split("\r\n")
    assert "c=IN IP4 203.0.113.9" in lines
    assert "a=candidate:a1 1 udp 2130706431 203.0.113.9 50123 typ host" in lines
    assert "a=candidate:c3 1 tcp 1518280447 203.0.113.9 9 typ host tcptype passive" in lines
    srflx = [line for line in lines if "typ srflx" in line]
    assert srflx == [ANSWER.split("\r\n")[7]]  # untouched
    assert out.endswith("\r\n") and len(lines) == len(ANSWER.split("\r\n"))
    assert announce_public_ip(ANSWER.replace("\r\n", "\n"), "203.0.113.9").count("\r") == 0
    with pytest.raises(ValueError):
        announce_public_ip(ANSWER, "not-an-ip")


def test_ice_public_ip_config_is_validated() -> None:
    assert from_mapping({"ice_public_ip": "203.0.113.9"}).ice_public_ip == "203.0.113.9"
    assert CallbotConfig.load(env={"CALLBOT_ICE_PUBLIC_IP": "2001:db8::1"}).ice_public_ip \
        == "2001:db8::1"
    with pytest.raises(ConfigError, match="ice_public_ip"):
        from_mapping({"ice_public_ip": "example.com"})


def _configured_urls(app: web.Application, call_id: str) -> list[tuple[str, ...]]:
    call = app[STATE].registry.get(call_id)
    assert call is not None
    configuration = call.transport.pc._RTCPeerConnection__configuration  # type: ignore[attr-defined]
    return [(*server.urls, server.username or "", server.credential or "")
            for server in configuration.iceServers]


@pytest.mark.e2e
async def test_ice_servers_factory_runs_per_call(
    start_server: ServerFactory, engines: Engines
) -> None:
    issued: list[str] = []

    async def turn_credentials(request: web.Request) -> list[IceServer]:
        await asyncio.sleep(0)
        issued.append(f"user{len(issued)}")
        # Never contacted: on loopback the host candidates connect; the port is closed.
        return [IceServer(urls=("turn:127.0.0.1:9?transport=udp",),
                          username=issued[-1], credential=f"secret-{len(issued)}")]

    app = create_app(CONFIG, engines=engines, hooks=CallHooks(ice_servers_factory=turn_credentials))
    base = await start_server(app=app)
    callers = [SyntheticCaller(base, keep_audio=False) for _ in range(2)]
    try:
        for caller in callers:
            started = time.monotonic()
            await caller.connect()
            print(f"\nconnected in {time.monotonic() - started:.2f} s with a dead TURN server")
        assert issued == ["user0", "user1"]
        for n, caller in enumerate(callers):
            assert caller.call_id is not None
            assert _configured_urls(app, caller.call_id) == [
                ("stun:127.0.0.1:9", "", ""),
                ("turn:127.0.0.1:9?transport=udp", f"user{n}", f"secret-{n + 1}"),
            ]
            assert caller.pc.connectionState == "connected"
    finally:
        for caller in callers:
            await caller.hangup()


@pytest.mark.e2e
async def test_failing_ice_servers_factory_refuses_the_call(
    start_server: ServerFactory, engines: Engines
) -> None:
    def broken(request: web.Request) -> Any:
        raise RuntimeError("credential service down")

    app = create_app(CONFIG, engines=engines, hooks=CallHooks(ice_servers_factory=broken))
    base = await start_server(app=app)
    caller = SyntheticCaller(base, keep_audio=False)
    try:
        with pytest.raises(CallFailed, match="ice_unavailable"):
            await caller.connect()
    finally:
        await caller.hangup(delete=False)
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/calls") as resp:
        assert (await resp.json())["calls"] == []
