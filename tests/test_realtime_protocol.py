"""The Realtime protocol adapter on a real VoiceSession with the scripted engines (fast):
event order and ids, session.update mapping, push-to-talk, barge-in truncation, function-call
round trip, bad client events. The real clients are in test_realtime_ws.py and
test_realtime_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from callbot.pipeline.engines import Engines
from callbot.pipeline.fakes import (
    EnergyVad,
    ScriptedASR,
    ScriptedLLM,
    ScriptedTTS,
    silence_frames,
    voice_frames,
)
from callbot.pipeline.llm.base import ChatMessage
from callbot.pipeline.llm.tools import Tool
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.settings import TurnSettings
from callbot.signalling.protocols.openai_realtime.audio import StreamingOutput, encode_pcm16
from callbot.signalling.protocols.openai_realtime.protocol import RealtimeProtocol
from callbot.signalling.protocols.openai_realtime.session_config import (
    RealtimeSessionConfig,
    default_turn_detection,
)

ID = re.compile(r"^(event|item|resp|sess|conv|call)_[0-9a-f]{20}$")


class ToolCallingLLM(ScriptedLLM):
    """A scripted model that calls its first tool once, as an OpenAI-compatible server's model
    would, and then answers with the tool's result in its reply (no tool-calling model can
    run in a fast test; the real one is in test_realtime_ws.py)."""

    supports_tools = True

    def __init__(self) -> None:
        super().__init__("unused")
        self.tool_results: list[str] = []

    async def stream_chat(self, messages: list[ChatMessage], *, max_tokens: int,
                          temperature: float, tools: Sequence[Tool] = ()
                          ) -> AsyncIterator[str]:
        self.requests.append([dict(m) for m in messages])  # type: ignore[misc]
        if tools:
            result = await tools[0].run('{"city": "Oslo"}')
            self.tool_results.append(result)
            yield f"The tool says: {result}"
        else:
            yield "No tools."


class Client:
    """What the client received, decoded."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, message: str) -> None:
        event = json.loads(message)
        assert ID.match(event["event_id"]), event
        self.events.append(event)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def wait(self, kind: str, count: int = 1, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while len(self.all(kind)) < count:  # noqa: ASYNC110 (polls what the sink got)
                await asyncio.sleep(0.005)
        return self.all(kind)[count - 1]


def make(finals: Sequence[str] = ("How many legs does a spider have?",), *,
         llm: ScriptedLLM | None = None, transport: str = "websocket"
         ) -> tuple[RealtimeProtocol, Client, VoiceSession]:
    engines = Engines(asr=ScriptedASR(finals), llm=llm or ScriptedLLM("Eight legs, friend."),
                      tts=ScriptedTTS(seconds_per_char=0.03))
    client = Client()
    holder: list[RealtimeProtocol] = []
    output = StreamingOutput(lambda pcm: holder[0].send_audio(pcm), 24_000)
    settings = TurnSettings()
    session = VoiceSession(engines, output=output, emit=lambda e: holder[0].on_event(e),
                           vad=EnergyVad(), settings=settings)
    config = RealtimeSessionConfig(instructions="Be brief.", voice="scripted",
                                   turn_detection=default_turn_detection(settings))
    protocol = RealtimeProtocol(
        session, client, config=config, base_settings=settings, voices=("scripted",),
        transcription_model="scripted", transport=transport, max_message_bytes=1 << 20,
        max_prompt_chars=2000, output=output if transport == "websocket" else None)
    holder.append(protocol)
    protocol.start()
    return protocol, client, session


def send(protocol: RealtimeProtocol, **event: Any) -> None:
    protocol.on_message(json.dumps(event))


def audio_24k(frames: list[np.ndarray]) -> str:
    pcm16k = np.concatenate(frames)
    return encode_pcm16(np.repeat(pcm16k, 3)[::2])  # 16 kHz -> 24 kHz, crudely


async def speak(protocol: RealtimeProtocol, frames: list[np.ndarray]) -> None:
    for i in range(0, len(frames), 5):  # 100 ms appends in real time
        send(protocol, type="input_audio_buffer.append", audio=audio_24k(frames[i:i + 5]))
        await asyncio.sleep(0.1)


async def test_spoken_turn_event_sequence() -> None:
    protocol, client, session = make()
    await speak(protocol, silence_frames(200) + voice_frames(800) + silence_frames(800))
    done = await client.wait("response.done")
    types = client.types()
    expected = ["session.created", "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                "conversation.item.added", "conversation.item.input_audio_transcription.completed",
                "response.created", "response.output_item.added",
                "response.output_audio_transcript.delta", "response.output_audio.delta",
                "response.output_audio.done", "response.output_audio_transcript.done",
                "response.output_item.done", "response.done"]
    positions = [types.index(kind) for kind in expected]
    assert positions == sorted(positions), types
    user = client.all("input_audio_buffer.committed")[0]["item_id"]
    assert client.all("input_audio_buffer.speech_started")[0]["item_id"] == user
    assert client.all("conversation.item.input_audio_transcription.completed")[0][
        "transcript"] == "How many legs does a spider have?"
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"][0]["transcript"] == "Eight legs, friend."
    assert session.history[-1] == {"role": "assistant", "content": "Eight legs, friend."}
    await session.close()


async def test_session_update_maps_onto_callbot_settings() -> None:
    protocol, client, session = make()
    send(protocol, type="session.update", session={
        "instructions": "Talk like a pirate.", "output_modalities": ["text"],
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000},
                            "turn_detection": {"type": "server_vad", "threshold": 0.8,
                                               "prefix_padding_ms": 300,
                                               "silence_duration_ms": 900,
                                               "interrupt_response": False}}}})
    updated = await client.wait("session.updated")
    assert updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 900
    e = session.settings.endpointing
    assert (e.vad_aggressiveness, e.segmenter.preroll_ms, e.statement_end_ms) == (3, 300, 900)
    assert e.question_end_ms <= 900 <= e.incomplete_end_ms
    assert not session.settings.interruption.enabled
    assert session.history[0]["content"] == "Talk like a pirate."
    assert not session.speak_replies
    # semantic_vad: callbot's own end of turn, silences scaled by eagerness
    send(protocol, type="session.update", session={
        "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}})
    await client.wait("session.updated", 2)
    default = TurnSettings().endpointing
    assert session.settings.endpointing.statement_end_ms < default.statement_end_ms
    # a bad field: error naming it, nothing applied, the session goes on
    send(protocol, type="session.update", event_id="event_mine",
         session={"instructions": "x", "audio": {"output": {"voice": "nobody"}}})
    error = await client.wait("error")
    assert error["error"]["param"] == "session.audio.output.voice"
    assert error["error"]["event_id"] == "event_mine"
    assert session.history[0]["content"] == "Talk like a pirate."
    await session.close()


async def test_text_turn_with_text_modality() -> None:
    protocol, client, session = make()
    send(protocol, type="session.update", session={"output_modalities": ["text"]})
    send(protocol, type="conversation.item.create", item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]})
    send(protocol, type="response.create")
    done = await client.wait("response.done")
    assert "response.output_text.delta" in client.types()
    assert "response.output_audio.delta" not in client.types()
    assert done["response"]["output"][0]["content"][0] == {"type": "output_text",
                                                            "text": "Eight legs, friend."}
    assert not client.all("conversation.item.input_audio_transcription.completed")
    await session.close()


async def test_push_to_talk_commit_and_clear() -> None:
    protocol, client, session = make()
    send(protocol, type="session.update", session={"audio": {"input": {"turn_detection": None}}})
    await client.wait("session.updated")
    send(protocol, type="input_audio_buffer.commit")
    assert (await client.wait("error"))["error"]["code"] == "input_audio_buffer_commit_empty"
    await speak(protocol, voice_frames(400))
    send(protocol, type="input_audio_buffer.clear")
    await client.wait("input_audio_buffer.cleared")
    await speak(protocol, voice_frames(600) + silence_frames(600))
    assert "input_audio_buffer.speech_started" not in client.types()  # no VAD in push-to-talk
    send(protocol, type="input_audio_buffer.commit")
    committed = await client.wait("input_audio_buffer.committed")
    send(protocol, type="response.create")
    heard = await client.wait("conversation.item.input_audio_transcription.completed")
    assert heard["item_id"] == committed["item_id"]
    assert (await client.wait("response.done"))["response"]["status"] == "completed"
    await session.close()


async def test_barge_in_truncates_to_what_was_heard() -> None:
    long_reply = "One two three four five six seven eight. " * 6
    protocol, client, session = make(
        ["Tell me a story.", "Stop."], llm=ScriptedLLM(long_reply, first_token_s=0.02),
        transport="webrtc")
    for frame in silence_frames(200) + voice_frames(800) + silence_frames(700):
        protocol.feed(frame)
        await asyncio.sleep(0.02)
    await client.wait("output_audio_buffer.started")
    await asyncio.sleep(1.0)
    for frame in voice_frames(600) + silence_frames(100):
        protocol.feed(frame)
        await asyncio.sleep(0.02)
    cleared = await client.wait("output_audio_buffer.cleared")
    done = await client.wait("response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert cleared["response_id"] == done["response"]["id"]
    truncated = await client.wait("conversation.item.truncated")
    assert 500 < truncated["audio_end_ms"] < 3000
    heard = done["response"]["output"][0]["content"][0]["transcript"]
    assert heard and len(heard) < len(long_reply.strip()), heard
    assert done["response"]["output"][0]["status"] == "incomplete"
    assert session.history[-1] == {"role": "assistant", "content": heard} or \
        session.history[-2] == {"role": "assistant", "content": heard}
    await session.close()


async def test_function_call_round_trip_through_the_client() -> None:
    llm = ToolCallingLLM()
    protocol, client, session = make(llm=llm)
    send(protocol, type="session.update", session={
        "output_modalities": ["text"],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object",
                                  "properties": {"city": {"type": "string"}}}}]})
    send(protocol, type="conversation.item.create", item={
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Weather in Oslo?"}]})
    send(protocol, type="response.create")
    first = await client.wait("response.done")
    call = first["response"]["output"][0]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    args = client.all("response.function_call_arguments.done")[0]
    assert json.loads(args["arguments"]) == {"city": "Oslo"}
    assert args["call_id"] == call["call_id"] and args["item_id"] == call["id"]
    # an output for a call nobody waits for is refused; the call goes on
    send(protocol, type="conversation.item.create",
         item={"type": "function_call_output", "call_id": "call_nope", "output": "x"})
    assert "no function call" in (await client.wait("error"))["error"]["message"]
    send(protocol, type="conversation.item.create", item={
        "type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21 C"})
    send(protocol, type="response.create")
    second = await client.wait("response.done", 2)
    assert second["response"]["id"] != first["response"]["id"]
    assert second["response"]["output"][0]["content"][0]["text"] == \
        "The tool says: sunny, 21 C"
    assert llm.tool_results == ["sunny, 21 C"]
    await session.close()


async def test_bad_events_get_errors_and_the_session_goes_on() -> None:
    protocol, client, session = make()
    protocol.on_message("{nope")
    protocol.on_message(b"\x00binary")
    protocol.on_message(json.dumps([1, 2]))
    send(protocol, type="no.such.thing")
    send(protocol, type="input_audio_buffer.append", audio="***not base64***")
    send(protocol, type="input_audio_buffer.append", audio="AAE")  # 3 bytes... not base64 pad
    send(protocol, type="conversation.item.create", item={"type": "message", "role": "user"})
    send(protocol, type="conversation.item.delete", item_id="item_missing")
    send(protocol, type="conversation.item.truncate", item_id="item_missing", audio_end_ms=5)
    send(protocol, type="input_audio_buffer.commit")  # with server VAD on
    send(protocol, type="response.create")  # nothing to answer
    codes = [e["error"]["code"] for e in client.all("error")]
    assert codes == ["invalid_json", "invalid_event", "invalid_event", "unknown_event",
                     "invalid_event", "invalid_event", "invalid_event", "invalid_event",
                     "invalid_event", "invalid_event", "nothing_to_answer"], codes
    send(protocol, type="conversation.item.create", item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]})
    send(protocol, type="response.create")
    assert (await client.wait("response.done"))["response"]["status"] == "completed"
    await session.close()
