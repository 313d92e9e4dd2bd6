"""Requests as real networks deliver them, and pathological JSON (issue 15): a body in several
TCP segments or chunked is read whole; deep nesting and huge integers are a 4xx over HTTP and
an `error` event on the data channel, never a 500 or a dead call; a tiny `max-message-size`
in the offer does not end the call."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from callbot.loadtest.caller import SyntheticCaller
from tests.conftest import raw_request

PADDED = json.dumps({"type": "offer", "sdp": "not an sdp", "pad": " " * 6000})



def _head(length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{framing}\r\nConnection: close\r\n\r\n").encode()


async def test_a_body_in_several_segments_is_read_whole(server: str) -> None:
    body = PADDED.encode()
    status, data = await raw_request(server, _head(len(body)), [body[:1000], body[1000:3000],
                                                        body[3000:]])
    assert (status, data["error"]["code"]) == (400, "invalid_sdp")  # not invalid_json


async def test_a_chunked_body_is_read_whole(server: str) -> None:
    body = PADDED.encode()
    chunks = [body[i:i + 1500] for i in range(0, len(body), 1500)]
    framed = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks] + [b"0\r\n\r\n"]
    status, data = await raw_request(server, _head(None), framed, pause=0.05)
    assert (status, data["error"]["code"]) == (400, "invalid_sdp")


async def test_a_chunked_body_over_the_cap_is_413(server: str) -> None:
    chunk = b"[" + b" " * 60_000
    framed = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * 2 + [b"0\r\n\r\n"]
    status, data = await raw_request(server, _head(None), framed, pause=0.05)
    assert (status, data["error"]["code"]) == (413, "body_too_large")


@pytest.mark.parametrize("raw", [
    "[" * 40_000 + "]" * 40_000,  # deep nesting
    '{"type": "offer", "options": ' + "{\"a\": " * 5000 + "1" + "}" * 5000 + "}",
    '{"type": "offer", "sdp": "v=0", "options": {"voice": ' + "9" * 20_000 + "}}",  # huge int
    '{"type": "offer", "sdp": "v=0", "n": -' + "1" * 5000 + "}",
    '{"type": "offer", "sdp": "v=0", "x": 1e999999}',
], ids=["deep-array", "deep-object", "huge-int", "huge-negative-int", "infinite-float"])
async def test_pathological_json_is_a_400(server: str, raw: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        f"{server}/v1/calls", data=raw, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["code"] in ("invalid_json", "invalid_sdp")
        async with http.get(f"{server}/healthz") as health:
            assert (await health.json())["calls"] == 0


async def _active(base: str, call_id: str) -> bool:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/calls") as resp:
        return any(c["call_id"] == call_id and c["state"] == "active"
                   for c in (await resp.json())["calls"])


async def test_deep_json_on_the_data_channel_is_an_error_event(server: str) -> None:
    caller = SyntheticCaller(server)
    try:
        call_id = await caller.connect()
        caller._channel.send("[" * 1900 + "]" * 1900)
        caller._channel.send('{"type": "input.text", "text": ' + "[" * 1500 + "]" * 1500 + "}")
        await asyncio.sleep(0.5)
        caller.send({"type": "no.such"})
        await caller.wait_event("error", timeout=10)
        deadline = time.monotonic() + 10
        while len(caller.events_of("error")) < 3:
            assert time.monotonic() < deadline, caller.events_of("error")
            await asyncio.sleep(0.05)
        codes = [e["code"] for e in caller.events_of("error")]
        assert codes == ["bad_message", "bad_message", "unknown_type"], codes
        assert await _active(server, call_id)
    finally:
        await caller.hangup()


async def test_a_tiny_max_message_size_does_not_end_the_call(server: str) -> None:
    caller = SyntheticCaller(server)
    pc = caller.pc
    try:
        pc.addTrack(caller.mic)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        assert "a=max-message-size:" in sdp
        lines = [("a=max-message-size:24" if line.startswith("a=max-message-size:") else line)
                 for line in sdp.split("\r\n")]
        async with aiohttp.ClientSession() as http, http.post(
            f"{server}/v1/calls", json={"type": "offer", "sdp": "\r\n".join(lines)}
        ) as resp:
            assert resp.status == 201
            answer = await resp.json()
        caller.call_id = answer["call_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        deadline = time.monotonic() + 20
        while pc.connectionState != "connected" or caller._channel.readyState != "open":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        for _ in range(5):  # every reply is bigger than 24 bytes: dropped, the call goes on
            caller.send({"type": "no.such"})
        caller.send({"type": "input.text", "text": "Hello?"})
        await asyncio.sleep(3)
        assert await _active(server, caller.call_id)
    finally:
        await caller.hangup()
