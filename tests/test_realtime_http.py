"""The Realtime HTTP edges: client secrets (single use), the multipart offer with a session,
201 + Location + application/sdp, hang-up, refused requests. The peer is a real aiortc
connection on loopback (in-process, so it shares the server's loopback ICE setting).

Run inside a loopback-only network namespace:
    unshare -n sh -c 'ip link set lo up; python3 -m pytest -q tests/test_realtime_http.py'
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

pytestmark = pytest.mark.e2e


async def _secret(http: aiohttp.ClientSession, server: str, body: Any) -> aiohttp.ClientResponse:
    return await http.post(f"{server}/v1/realtime/client_secrets", json=body)


async def _offer() -> tuple[RTCPeerConnection, Any, asyncio.Queue[dict[str, Any]]]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())  # silence: a call needs a microphone
    channel = pc.createDataChannel("oai-events")
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    channel.on("message", lambda m: received.put_nowait(json.loads(m)))
    await pc.setLocalDescription(await pc.createOffer())
    return pc, channel, received


async def test_client_secret_and_multipart_call_and_hangup(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await _secret(http, server, {"expires_after": {"anchor": "created_at",
                                                              "seconds": 120},
                                            "session": {"type": "realtime",
                                                        "output_modalities": ["text"]}})
        assert resp.status == 200, await resp.text()
        minted = await resp.json()
        assert minted["value"].startswith("ek_")
        assert 100 < minted["expires_at"] - time.time() <= 121
        assert minted["session"]["output_modalities"] == ["text"]

        pc, channel, received = await _offer()
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("sdp", pc.localDescription.sdp)
        form.add_field("session", json.dumps({"type": "realtime",
                                              "instructions": "Talk like a pirate."}))
        headers = {"Authorization": f"Bearer {minted['value']}"}
        resp = await http.post(f"{server}/v1/realtime/calls", data=form, headers=headers)
        assert resp.status == 201, await resp.text()
        assert resp.content_type == "application/sdp"
        location = resp.headers["Location"]
        call_id = location.rsplit("/", 1)[1]
        assert location == f"/v1/realtime/calls/{call_id}"
        await pc.setRemoteDescription(RTCSessionDescription(await resp.text(), "answer"))
        try:
            async with asyncio.timeout(20):
                created = await received.get()
            assert created["type"] == "session.created"
            # the secret's session and the form's session both apply
            assert created["session"]["instructions"] == "Talk like a pirate."
            assert created["session"]["output_modalities"] == ["text"]
            calls = await (await http.get(f"{server}/v1/calls")).json()
            assert call_id in [c["call_id"] for c in calls["calls"]]

            # the client secret was single use
            pc2, _, _ = await _offer()
            resp = await http.post(f"{server}/v1/realtime/calls", data=pc2.localDescription.sdp,
                                   headers={**headers, "Content-Type": "application/sdp"})
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "invalid_client_secret"
            await pc2.close()

            resp = await http.post(f"{server}/v1/realtime/calls/{call_id}/hangup")
            assert resp.status == 200
            calls = await (await http.get(f"{server}/v1/calls")).json()
            assert call_id not in [c["call_id"] for c in calls["calls"]]
            resp = await http.post(f"{server}/v1/realtime/calls/{call_id}/hangup")
            assert resp.status == 404
        finally:
            await pc.close()


async def test_refused_requests(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        for body, param in (({"expires_after": {"seconds": 5}}, "expires_after"),
                            ({"session": {"audio": {"output": {"voice": "nobody"}}}}, "voice"),
                            ({"session": {"tool_choice": "sometimes"}}, "tool_choice")):
            resp = await _secret(http, server, body)
            assert resp.status == 400, body
            assert param in (await resp.json())["error"]["message"]
        url = f"{server}/v1/realtime/calls"
        resp = await http.post(url, data="v=0", headers={"Content-Type": "text/plain"})
        assert resp.status == 415
        resp = await http.post(url, data="hello", headers={"Content-Type": "application/sdp"})
        assert resp.status == 400
        resp = await http.post(url, data="v=0\r\n", headers={
            "Content-Type": "application/sdp", "Authorization": "Bearer ek_madeup"})
        assert resp.status == 401
        resp = await http.post(f"{url}/nope/hangup")
        assert resp.status == 404
        # a plain GET is not a WebSocket upgrade
        resp = await http.get(f"{server}/v1/realtime")
        assert resp.status == 400
