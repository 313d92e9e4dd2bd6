"""The official `openai` Python client's Realtime API, pointed at callbot's WebSocket endpoint
(`GET /v1/realtime`) on loopback: real client, real models, nothing hand-written on the
client side but the app code a developer would write.

Run inside a loopback-only network namespace:
    unshare -n sh -c 'ip link set lo up; python3 -m pytest -q tests/test_realtime_ws.py'
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI

from support import speech
from tests.realtime_llm import SECRET_WORD, TOOL_CONFIG, TOOL_OUTPUT, tool_engines, tool_llm_url

pytestmark = pytest.mark.e2e
__all__ = ["tool_engines", "tool_llm_url"]  # fixtures

QUESTION = "How many legs does a spider have?"
RATE = 24_000
ID = re.compile(r"^(event|item|resp|sess|conv|call)_[0-9a-f]{20}$")


def _client(server: str) -> AsyncOpenAI:
    # The two-line change of the README: callbot's base URL, any key (auth is open on
    # loopback). `websocket_base_url` defaults to base_url with ws:// and /realtime added.
    return AsyncOpenAI(api_key="sk-callbot-test", base_url=f"{server}/v1")


def _data(event: Any) -> dict[str, Any]:
    return event if isinstance(event, dict) else event.model_dump()


async def _events_until(conn: Any, kind: str, seen: list[dict[str, Any]],
                        timeout_s: float = 60) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            event = _data(await conn.recv())
            seen.append(event)
            assert ID.match(event["event_id"]), event
            if event["type"] == kind:
                return event


async def _paced_audio(conn: Any, clip: speech.Clip) -> None:
    """The clip as a microphone would send it: 100 ms chunks in real time."""
    pcm = clip.at_rate(RATE).pcm
    step = RATE // 10
    for start in range(0, len(pcm), step):
        chunk = pcm[start:start + step].astype("<i2").tobytes()
        await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        await asyncio.sleep(0.1)


@pytest.fixture
async def connection(server: str) -> AsyncIterator[Any]:
    client = _client(server)
    async with client.realtime.connect(model="callbot-local") as conn:
        yield conn
    await client.close()


async def test_spoken_question_gets_transcript_and_audio(connection: Any) -> None:
    conn = connection
    seen: list[dict[str, Any]] = []
    created = await _events_until(conn, "session.created", seen)
    assert created["session"]["model"] == "callbot-local"
    await conn.session.update(session={
        "type": "realtime", "output_modalities": ["audio"],
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE},
                            "turn_detection": {"type": "server_vad",
                                               "silence_duration_ms": 500}},
                  "output": {"format": {"type": "audio/pcm", "rate": RATE}}},
    })
    updated = await _events_until(conn, "session.updated", seen)
    detection = updated["session"]["audio"]["input"]["turn_detection"]
    assert detection["type"] == "server_vad" and detection["silence_duration_ms"] == 500

    clip = speech.espeak(QUESTION, 48_000).padded(0.5, 1.5)
    sender = asyncio.ensure_future(_paced_audio(conn, clip))
    done = await _events_until(conn, "response.done", seen, timeout_s=90)
    await sender
    kinds = [e["type"] for e in seen]
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed", "conversation.item.added",
                 "conversation.item.input_audio_transcription.completed", "response.created",
                 "response.output_item.added", "response.output_audio_transcript.delta",
                 "response.output_audio.delta", "response.output_audio.done",
                 "response.output_audio_transcript.done", "response.output_item.done"):
        assert kind in kinds, (kind, kinds)
    heard = next(e for e in seen
                 if e["type"] == "conversation.item.input_audio_transcription.completed")
    speech.assert_heard(heard["transcript"], QUESTION)
    # the transcription belongs to the committed user item
    committed = next(e for e in seen if e["type"] == "input_audio_buffer.committed")
    assert heard["item_id"] == committed["item_id"] and ID.match(committed["item_id"])

    assert done["response"]["status"] == "completed"
    assert ID.match(done["response"]["id"])
    audio = b"".join(base64.b64decode(e["delta"]) for e in seen
                     if e["type"] == "response.output_audio.delta")
    pcm = np.frombuffer(audio, dtype="<i2")
    assert len(pcm) / RATE > 0.5, "less than half a second of reply audio"
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 200, "the reply audio is silent"
    transcript = next(e for e in seen if e["type"] == "response.output_audio_transcript.done")
    deltas = "".join(e["delta"] for e in seen
                     if e["type"] == "response.output_audio_transcript.delta")
    assert transcript["transcript"].strip() and transcript["transcript"] == deltas.strip()
    message = done["response"]["output"][0]
    assert message["role"] == "assistant"
    assert message["content"][0]["transcript"] == transcript["transcript"]


async def test_text_turn_and_bad_events(connection: Any) -> None:
    conn = connection
    seen: list[dict[str, Any]] = []
    await _events_until(conn, "session.created", seen)
    # Unknown and malformed events: an error each, and the session goes on.
    await conn.send({"type": "no.such.event"})  # type: ignore[arg-type, typeddict-item]
    error = await _events_until(conn, "error", seen)
    assert error["error"]["code"] == "unknown_event"
    await conn.session.update(session={"type": "realtime", "output_modalities": ["video"]})  # type: ignore[list-item]
    error = await _events_until(conn, "error", seen)
    assert error["error"]["param"] == "session.output_modalities"
    await conn._connection.send("{not json")
    error = await _events_until(conn, "error", seen)
    assert error["error"]["code"] == "invalid_json"

    await conn.session.update(session={
        "type": "realtime", "output_modalities": ["text"],
        "instructions": "You are a helpful assistant. Answer in one short sentence.",
    })
    await _events_until(conn, "session.updated", seen)
    await conn.conversation.item.create(item={
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "What is the capital of France?"}],
    })
    added = await _events_until(conn, "conversation.item.added", seen)
    assert added["item"]["role"] == "user"
    await conn.response.create()
    done = await _events_until(conn, "response.done", seen)
    kinds = [e["type"] for e in seen]
    assert "response.output_text.delta" in kinds and "response.output_audio.delta" not in kinds
    text = next(e for e in seen if e["type"] == "response.output_text.done")["text"]
    assert "paris" in text.lower(), text
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"][0]["text"] == text
    # the assistant item can be fetched back and deleted
    item_id = done["response"]["output"][0]["id"]
    await conn.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = await _events_until(conn, "conversation.item.retrieved", seen)
    assert retrieved["item"]["id"] == item_id
    await conn.conversation.item.delete(item_id=item_id)
    deleted = await _events_until(conn, "conversation.item.deleted", seen)
    assert deleted["item_id"] == item_id
    assert json.dumps(seen)  # everything the client got is plain JSON


async def test_function_call_round_trip(start_server: Any, tool_engines: Any) -> None:
    """The LLM's tool call goes to the client; the reply continues with the client's output."""
    server = await start_server(TOOL_CONFIG, app_engines=tool_engines)
    client = _client(server)
    seen: list[dict[str, Any]] = []
    async with client.realtime.connect(model="callbot-tools") as conn:
        await _events_until(conn, "session.created", seen)
        await conn.session.update(session={
            "type": "realtime", "output_modalities": ["text"],
            "instructions": "You are a helpful assistant. Answer in one short sentence.",
            "tools": [{"type": "function", "name": "get_secret_word",
                       "description": "Get the secret word of the day.",
                       "parameters": {"type": "object", "properties": {},
                                      "additionalProperties": False}}],
            "tool_choice": {"type": "function", "name": "get_secret_word"},
        })
        await _events_until(conn, "session.updated", seen)
        await conn.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What is the secret word of the day?"}],
        })
        await conn.response.create()
        first = await _events_until(conn, "response.done", seen, timeout_s=300)
        call = first["response"]["output"][-1]
        assert call["type"] == "function_call" and call["name"] == "get_secret_word", first
        assert first["response"]["status"] == "completed"
        args = next(e for e in seen if e["type"] == "response.function_call_arguments.done")
        assert args["call_id"] == call["call_id"] and json.loads(args["arguments"]) == {}
        assert ID.match(call["call_id"]) and ID.match(call["id"])

        await conn.conversation.item.create(item={
            "type": "function_call_output", "call_id": call["call_id"], "output": TOOL_OUTPUT})
        await conn.response.create()
        second = await _events_until(conn, "response.done", seen, timeout_s=300)
        assert second["response"]["id"] != first["response"]["id"]
        assert second["response"]["status"] == "completed"
        text = second["response"]["output"][0]["content"][0]["text"]
        assert SECRET_WORD in text.lower(), text
    await client.close()
