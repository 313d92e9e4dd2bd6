"""The offer itself (issue 15): capped m-lines and remote candidates, and no connectivity
checks to addresses the operator does not allow (loopback/private excluded on a public
deployment; loopback test deployments keep working)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from callbot.loadtest.caller import SyntheticCaller
from callbot.rtc.offer_guard import CandidatePolicy, OfferRefused, guard_offer
from callbot.signalling.app import create_app
from callbot.signalling.server.state import STATE
from tests.conftest import TEST_CONFIG


async def _offer(caller: SyntheticCaller) -> list[str]:
    caller.pc.addTrack(caller.mic)
    await caller.pc.setLocalDescription(await caller.pc.createOffer())
    return caller.pc.localDescription.sdp.split("\r\n")


def _with_candidates(lines: list[str], addresses: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        out.append(line)
        if line.startswith("a=mid:"):  # extra host candidates in every media section
            out.extend(f"a=candidate:{9000 + i} 1 udp 2130706431 {a} {40000 + i} typ host"
                       for i, a in enumerate(addresses))
    return out


async def _post(base: str, lines: list[str]) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(
        f"{base}/v1/calls", json={"type": "offer", "sdp": "\r\n".join(lines)}
    ) as resp:
        return resp.status, await resp.json()


async def test_too_many_candidates_is_a_400(server: str) -> None:
    caller = SyntheticCaller(server)
    try:
        lines = _with_candidates(await _offer(caller),
                                 [f"10.{i // 250}.{i % 250}.1" for i in range(300)])
        status, body = await _post(server, lines)
        assert (status, body["error"]["code"]) == (400, "too_many_candidates")
    finally:
        await caller.hangup(delete=False)


async def test_too_many_m_lines_is_a_400(server: str) -> None:
    caller = SyntheticCaller(server)
    try:
        lines = await _offer(caller)
        start = next(i for i, line in enumerate(lines) if line.startswith("m=audio"))
        end = next((i for i, line in enumerate(lines) if i > start and line.startswith("m=")),
                   len(lines) - 1)
        section = lines[start:end]
        many = lines[:end] + [x.replace("a=mid:0", f"a=mid:x{k}") for k in range(40)
                              for x in section] + lines[end:]
        status, body = await _post(server, many)
        assert (status, body["error"]["code"]) == (400, "too_many_media")
    finally:
        await caller.hangup(delete=False)


def test_public_deployments_check_public_addresses_only() -> None:
    public = CandidatePolicy.for_deployment(None, ["93.184.216.34"], None)
    behind_nat = CandidatePolicy.for_deployment(None, ["10.0.0.4"], "93.184.216.34")
    local = CandidatePolicy.for_deployment(None, ["127.0.0.1"], None)
    for policy in (public, behind_nat):
        assert policy.allows("8.8.8.8") and policy.allows("2001:4860::8888")
        for denied in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.9", "169.254.169.254",
                       "::1", "fd00::1", "fe80::1", "224.0.0.1", "0.0.0.0", "abc.local",
                       "internal.example"):
            assert not policy.allows(denied), denied
    for allowed in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "8.8.8.8", "abc.local"):
        assert local.allows(allowed), allowed
    explicit = CandidatePolicy.for_deployment(["127.0.0.0/8"], ["93.184.216.34"], None)
    assert explicit.allows("127.0.0.1") and not explicit.allows("10.1.2.3")
    sdp = "\r\n".join(["v=0", "m=audio 9 UDP 0", "a=mid:0",
                       "a=candidate:1 1 udp 1 10.0.0.1 5000 typ host",
                       "a=candidate:2 1 udp 1 8.8.8.8 5000 typ srflx raddr 0.0.0.0 rport 0"])
    kept = guard_offer(sdp, max_m_lines=4, max_candidates=8, policy=public)
    assert "10.0.0.1" not in kept and "8.8.8.8" in kept
    with pytest.raises(OfferRefused):
        guard_offer(sdp, max_m_lines=4, max_candidates=1, policy=public)


async def test_disallowed_candidates_get_no_checks(start_server, engines) -> None:
    app = create_app(TEST_CONFIG.replace(ice_remote_networks=("127.0.0.0/8",)), engines=engines)
    base = await start_server(app=app)
    caller = SyntheticCaller(base)
    try:
        lines = _with_candidates(await _offer(caller), ["10.9.8.7", "192.168.77.77"])
        status, answer = await _post(base, lines)
        assert status == 201, answer
        caller.call_id = answer["call_id"]
        await caller.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"],
                                                                   type="answer"))
        deadline = time.monotonic() + 20
        while caller.pc.connectionState != "connected":  # loopback still connects
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        call = app[STATE].registry.get(caller.call_id)
        assert call is not None
        remote = set()
        for transceiver in call.transport.pc.getTransceivers():
            connection = transceiver.receiver.transport.transport._connection
            remote |= {c.host for c in connection._remote_candidates}
            checked = {pair.remote_candidate.host for pair in connection._check_list}
            assert not checked & {"10.9.8.7", "192.168.77.77"}, checked
        assert remote and not remote & {"10.9.8.7", "192.168.77.77"}, remote
    finally:
        await caller.hangup()
