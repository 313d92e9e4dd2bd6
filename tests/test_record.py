"""The call record of a real call: a synthetic WebRTC caller asks a spoken question of the real
server (VAD, Whisper, LLM, Piper); the transcript has both sides with times, the stereo
recording has the caller's voice on the left when they spoke and the bot's on the right when
it answered, the hook gets the record, only the owner sees it, and erasing removes it."""

from __future__ import annotations

import asyncio
import io
import re
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.engines import Engines
from callbot.signalling.app import create_app
from callbot.signalling.calls.handle import CallHandle
from callbot.signalling.calls.hooks import CallHooks
from callbot.signalling.config import AuthSettings, RecordSettings
from support import speech
from tests.conftest import TEST_CONFIG, ServerFactory
from tests.test_call_e2e import speak
from tests.test_record_fast import otlp_receiver, parse_vtt, span_names

pytestmark = pytest.mark.e2e

OWNER = {"Authorization": "Bearer tok-owner"}
OTHER = {"Authorization": "Bearer tok-other"}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


async def test_a_spoken_call_leaves_transcript_recording_and_trace(
    start_server: ServerFactory, engines: Engines, question: speech.Clip, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    async with otlp_receiver() as (otlp_url, exported):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # ms: export soon
        await _spoken_call(start_server, engines, question, tmp_path, exported)


async def _spoken_call(start_server: ServerFactory, engines: Engines, question: speech.Clip,
                       tmp_path: Path, exported: list[bytes]) -> None:
    records: list[dict[str, Any]] = []

    def on_record(call: CallHandle, record: dict[str, Any]) -> None:
        records.append(record)

    config = TEST_CONFIG.replace(
        auth=AuthSettings(mode="token", bearer_tokens=("tok-owner", "tok-other"),
                          client_system_prompt="allow"),
        record=RecordSettings(audio=True, db=str(tmp_path / "records.sqlite"),
                              audio_dir=str(tmp_path / "wav")))
    base = await start_server(app=create_app(config, engines=engines,
                                             hooks=CallHooks(on_call_record=on_record)))
    caller = SyntheticCaller(base, headers=OWNER)
    call_id = await caller.connect()
    start = len(caller.events)
    await speak(caller, question)
    await caller.wait_event("response.audio.done", timeout=60, after=start)
    url = f"{base}/v1/calls/{call_id}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/transcript", headers=OWNER) as resp:  # while it runs
            assert resp.status == 200
            live = await resp.json()
        assert not live["ended"] and [t["role"] for t in live["turns"]][:2] == ["caller", "bot"]
        await asyncio.sleep(1.0)  # a second of quiet after the answer
        await caller.hangup()
        for _ in range(100):
            if records:
                break
            await asyncio.sleep(0.1)
        assert records, "on_call_record did not run"

        async with http.get(f"{url}/transcript", headers=OWNER) as resp:
            assert resp.status == 200
            record = await resp.json()
        assert record["ended"] and record["call_id"] == call_id
        caller_turn = next(t for t in record["turns"] if t["role"] == "caller")
        bot_turn = next(t for t in record["turns"] if t["role"] == "bot")
        assert set(re.findall(r"[a-z]+", caller_turn["text"].lower())) & {"spider", "legs"}
        assert bot_turn["text"].strip() and bot_turn["heard_text"].strip()
        assert caller_turn["end_ms"] > caller_turn["start_ms"]
        assert bot_turn["start_ms"] >= caller_turn["end_ms"]
        assert bot_turn["end_ms"] > bot_turn["start_ms"] + 300
        assert "first_audio_ms" in bot_turn["latency_ms"]
        assert records[0]["turns"] == record["turns"]

        async with http.get(f"{url}/transcript?format=vtt", headers=OWNER) as resp:
            assert resp.status == 200 and resp.content_type == "text/vtt"
            cues = parse_vtt(await resp.text())
        assert len(cues) == len(record["turns"])

        async with http.get(f"{url}/recording.wav", headers=OWNER) as resp:
            assert resp.status == 200
            body = await resp.read()
        with wave.open(io.BytesIO(body), "rb") as wav:
            assert wav.getnchannels() == 2
            rate = wav.getframerate()
            data = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
        duration = len(data) / rate
        assert abs(duration - record["duration_ms"] / 1000) < 1.5, (duration, record)

        def span(turn: dict[str, Any], channel: int) -> np.ndarray:
            return data[int(turn["start_ms"] / 1000 * rate):int(turn["end_ms"] / 1000 * rate),
                        channel]

        # the caller's voice on the left while they spoke, the bot's on the right while it
        # answered; each channel near-silent while the other side talks (no echo here)
        caller_left, caller_right = _rms(span(caller_turn, 0)), _rms(span(caller_turn, 1))
        bot_left, bot_right = _rms(span(bot_turn, 0)), _rms(span(bot_turn, 1))
        assert caller_left > 300 and bot_right > 300, (caller_left, bot_right)
        assert caller_right < caller_left / 10 and bot_left < bot_right / 10, (
            caller_right, bot_left)

        for method, path in (("GET", "/transcript"), ("GET", "/recording.wav"),
                             ("DELETE", "/record")):
            async with http.request(method, f"{url}{path}", headers=OTHER) as resp:
                assert resp.status == 404, (method, path)  # another token: no such call

        stored = tmp_path / "wav" / f"{call_id}.wav"
        assert stored.is_file()
        async with http.delete(f"{url}/record", headers=OWNER) as resp:
            assert resp.status == 204
        assert not stored.exists()
        for path in ("/transcript", "/recording.wav"):
            async with http.get(f"{url}{path}", headers=OWNER) as resp:
                assert resp.status == 404
    for _ in range(100):  # the call's span is exported after it ends (batch processor)
        if any(a.get("callbot.call_id") == call_id for a in span_names(exported).get("call", [])):
            break
        await asyncio.sleep(0.1)
    spans = span_names(exported)
    assert any(a.get("callbot.call_id") == call_id for a in spans.get("call", [])), spans.keys()
    turns = [a for a in spans.get("turn", []) if a.get("callbot.call_id") == call_id]
    assert turns and {"asr", "playout"} <= set(spans)


async def test_a_realtime_websocket_call_is_recorded_too(
    start_server: ServerFactory, engines: Engines, question: speech.Clip, tmp_path: Path
) -> None:
    """The OpenAI Realtime WebSocket entrance gets the same record (attached at admission):
    the bot's audio is placed by the client's playout clock, not when it was sent."""
    from openai import AsyncOpenAI

    from callbot.signalling.server.state import STATE
    from tests.test_realtime_ws import RATE, _events_until, _paced_audio

    config = TEST_CONFIG.replace(record=RecordSettings(
        audio=True, db=str(tmp_path / "records.sqlite"), audio_dir=str(tmp_path / "wav")))
    app = create_app(config, engines=engines)
    base = await start_server(app=app)
    client = AsyncOpenAI(api_key="sk-callbot-test", base_url=f"{base}/v1")
    seen: list[dict[str, Any]] = []
    async with client.realtime.connect(model="callbot-local") as conn:
        await _events_until(conn, "session.created", seen)
        await conn.session.update(session={
            "type": "realtime", "output_modalities": ["audio"],
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE}},
                      "output": {"format": {"type": "audio/pcm", "rate": RATE}}}})
        await _events_until(conn, "session.updated", seen)
        records = app[STATE].records
        assert records is not None and len(records.live) == 1
        call_id = next(iter(records.live))
        await _paced_audio(conn, question)
        await _events_until(conn, "response.done", seen, timeout_s=90)
        await asyncio.sleep(4.0)  # the client "plays" the answer (sent ahead of time)
    await client.close()
    for _ in range(100):
        if not records.live:
            break
        await asyncio.sleep(0.1)
    url = f"{base}/v1/calls/{call_id}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/transcript") as resp:
            assert resp.status == 200
            record = await resp.json()
        async with http.get(f"{url}/recording.wav") as resp:
            assert resp.status == 200
            body = await resp.read()
    caller_turn = next(t for t in record["turns"] if t["role"] == "caller")
    bot_turn = next(t for t in record["turns"] if t["role"] == "bot")
    with wave.open(io.BytesIO(body), "rb") as wav:
        rate = wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)

    def span(turn: dict[str, Any], channel: int) -> np.ndarray:
        return data[int(turn["start_ms"] / 1000 * rate):int(turn["end_ms"] / 1000 * rate),
                    channel]

    assert _rms(span(caller_turn, 0)) > 300 and _rms(span(caller_turn, 1)) < 30
    assert _rms(span(bot_turn, 1)) > 300, record
