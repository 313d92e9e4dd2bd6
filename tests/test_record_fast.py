"""The call record's parts without a call: transcript from events, WebVTT, the stereo
recording (alignment, barge-in cut, a failing disk), the SQLite store (retention, erase), the
config keys, and trace export to a real OTLP/HTTP receiver (aiohttp on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from callbot.pipeline import events as ev
from callbot.signalling.config import CallbotConfig, apply_env
from callbot.signalling.records.store import RecordStore
from callbot.signalling.records.tracing import CallTracer, tracing_configured
from callbot.signalling.records.transcript import Transcript, to_vtt
from callbot.signalling.records.wav import StereoRecording


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _conversation() -> Transcript:
    clock = Clock()
    t = Transcript("c1", 100.0, clock=clock)
    steps: list[tuple[float, ev.Event]] = [
        (0.5, ev.SpeechStarted()), (2.0, ev.SpeechStopped()),
        (2.3, ev.TranscriptFinal(text="What are your opening hours?", turn_id=1)),
        (2.6, ev.ResponseTextDelta(delta="We open at nine. ", turn_id=1)),
        (2.9, ev.ResponseAudioStarted(turn_id=1)),
        (3.0, ev.TurnMetrics(turn_id=1, asr_ms=250.0, llm_first_token_ms=300.0,
                             first_audio_ms=900.0)),
        (3.1, ev.ResponseTextDelta(delta="And we close at five.", turn_id=1)),
        (4.0, ev.SpeechStarted()),
        (4.1, ev.ResponseInterrupted(turn_id=1, reason="barge_in",
                                     spoken_text="We open at nine.")),
        (5.0, ev.SpeechStopped()),
        (5.2, ev.TranscriptFinal(text="My email is jane@example.com", turn_id=2)),
        (5.3, ev.SafetyFlagged(source="caller", categories=("pii",), action="warned")),
    ]
    for at, event in steps:
        clock.t = 100.0 + at
        t.on_event(event)
    clock.t = 106.0
    t.end("en")
    return t


def test_transcript_has_both_sides_with_times_heard_text_and_latency() -> None:
    record = _conversation().to_json()
    assert record["call_id"] == "c1" and record["ended"] and record["language"] == "en"
    assert record["duration_ms"] == 6000
    roles = [turn["role"] for turn in record["turns"]]
    assert roles == ["caller", "bot", "caller"]
    caller, bot, caller2 = record["turns"]
    assert (caller["start_ms"], caller["end_ms"]) == (500, 2000)
    assert bot["text"] == "We open at nine. And we close at five."
    assert bot["heard_text"] == "We open at nine." and bot["interrupted"] == "barge_in"
    assert bot["start_ms"] <= 2900 and bot["end_ms"] == 4100
    assert bot["latency_ms"]["first_audio_ms"] == 900.0
    assert caller2["safety"] == [{"categories": ["pii"], "action": "warned"}]


def test_stored_text_can_be_redacted() -> None:
    record = _conversation().to_json(lambda text: text.replace("jane@example.com", "[email]"))
    assert "jane@example.com" not in str(record)


VTT_CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """A strict-enough WebVTT reader: header, numbered cues, timings, one payload line."""
    blocks = text.strip().split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in blocks[1:]:
        lines = block.split("\n")
        timing = VTT_CUE.match(lines[1])
        assert timing, lines[1]
        h1, m1, s1, f1, h2, m2, s2, f2 = map(int, timing.groups())
        start = h1 * 3600 + m1 * 60 + s1 + f1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + f2 / 1000
        assert end > start
        cues.append((start, end, lines[2]))
    return cues


def test_keys_pressed_on_a_phone_are_in_the_transcript() -> None:
    """A SIP caller's DTMF digits: one entry per burst, in order with the spoken turns."""
    clock = Clock()
    t = Transcript("c2", started_at=100.0, clock=clock)
    for at, event in [(1.0, ev.Dtmf(digit="1")), (1.4, ev.Dtmf(digit="2")),
                      (2.0, ev.SpeechStarted()), (3.0, ev.SpeechStopped()),
                      (3.2, ev.TranscriptFinal(text="Opening hours please", turn_id=1)),
                      (6.0, ev.Dtmf(digit="#"))]:
        clock.t = 100.0 + at
        t.on_event(event)
    record = t.to_json()
    keys = [(turn.get("dtmf"), turn["text"]) for turn in record["turns"]]
    assert keys == [("12", ""), (None, "Opening hours please"), ("#", "")], keys
    assert record["turns"][0]["start_ms"] == 1000 and record["turns"][0]["end_ms"] == 1400
    assert "<v caller>[keypad: 12]" in to_vtt(record)


def test_vtt_gives_one_cue_per_turn_with_voices() -> None:
    cues = parse_vtt(to_vtt(_conversation().to_json()))
    assert [c[2].split(">")[0] for c in cues] == ["<v caller", "<v bot", "<v caller"]
    assert cues[1][2] == "<v bot>We open at nine."  # what was heard
    assert cues[0][:2] == (0.5, 2.0)


def _tone(seconds: float, freq: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 16_000
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return data.reshape(-1, 2).astype(np.float64)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2))) if x.size else 0.0


def test_recording_puts_caller_left_and_bot_right_on_the_call_clock(tmp_path: Path) -> None:
    rec = StereoRecording(tmp_path / "c.wav")
    caller = _tone(2.0, 300)
    at = 0.0
    for i in range(0, caller.size, 320):  # caller speaks 0-2 s
        rec.caller(caller[i : i + 320], at)
        at += 0.02
    silence = np.zeros(320, dtype=np.int16)
    bot = _tone(1.0, 700, 48_000)
    for _ in range(12 * 50):  # 2-14 s: silence from the caller, the bot at 3-4 s
        rec.caller(silence, at)
        t = at
        if 3.0 <= t < 4.0:
            k = int(round((t - 3.0) * 50))
            rec.bot(bot[k * 960 : (k + 1) * 960], 48_000, t)
        at += 0.02
    rec.close(at)
    rec.wait_written()
    data = _read(tmp_path / "c.wav")
    assert abs(len(data) / 16_000 - 14.0) < 0.05
    left, right = data[:, 0], data[:, 1]
    s = 16_000
    assert _rms(left[: 2 * s]) > 3000 and _rms(right[: 2 * s]) < 10
    assert _rms(right[int(3.05 * s) : int(3.95 * s)]) > 3000
    assert _rms(left[int(3 * s) : int(4 * s)]) < 10
    assert _rms(right[int(4.1 * s) :]) < 10 and _rms(right[int(2.1 * s) : int(2.9 * s)]) < 10
    assert rec.dropped_s == 0


def test_audio_sent_ahead_is_cut_at_barge_in(tmp_path: Path) -> None:
    """A WebSocket client is sent audio ahead of playing it: only what it played is kept."""
    rec = StereoRecording(tmp_path / "ws.wav")
    rec.bot(_tone(5.0, 500), 16_000, 1.0)  # 1-6 s, sent at once
    silence = np.zeros(320, dtype=np.int16)
    for i in range(8 * 50):
        at = i * 0.02
        if abs(at - 2.5) < 1e-6:
            rec.bot_cut(2.5)  # barge-in: played 1.5 s of it
        rec.caller(silence, at)
    rec.close(8.0)
    rec.wait_written()
    right = _read(tmp_path / "ws.wav")[:, 1]
    s = 16_000
    assert _rms(right[int(1.1 * s) : int(2.4 * s)]) > 3000
    assert _rms(right[int(2.6 * s) :]) < 10


def test_a_failing_disk_drops_audio_and_never_blocks(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    rec = StereoRecording(tmp_path / "file" / "c.wav", max_backlog_s=2)  # parent is a file
    frame = _tone(0.02, 300)
    started = time.perf_counter()
    for i in range(60 * 50):  # a minute of call
        rec.caller(frame, i * 0.02)
    rec.close(60.0)
    assert time.perf_counter() - started < 5
    rec.wait_written()
    assert rec.failed is not None and rec.dropped_s > 50


def test_a_slow_disk_never_holds_up_the_call_nor_its_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = wave.Wave_write.writeframes

    def stall(self: wave.Wave_write, data: bytes) -> None:
        time.sleep(0.3)  # a disk that takes 0.3 s per 2 s block... and more calls than that
        slow(self, data)

    monkeypatch.setattr(wave.Wave_write, "writeframes", stall)
    rec = StereoRecording(tmp_path / "slow.wav", max_backlog_s=4)
    frame = _tone(0.02, 300)
    started = time.perf_counter()
    for i in range(120 * 50):  # two minutes of call, as fast as it comes
        rec.caller(frame, i * 0.02)
    rec.close(120.0)
    assert time.perf_counter() - started < 2.0  # neither the frames nor close() waited
    assert rec.dropped_s > 60  # the disk could not keep up: audio dropped, counted
    rec.wait_written()
    with wave.open(str(tmp_path / "slow.wav"), "rb") as wav:
        assert wav.getnframes() > 0  # what was written is a valid file


def test_store_keeps_erases_and_expires_records(tmp_path: Path) -> None:
    store = RecordStore(str(tmp_path / "r.sqlite"), retention_days=1)
    wav_a, wav_b = tmp_path / "a.wav", tmp_path / "b.wav"
    wav_a.write_bytes(b"RIFF")
    wav_b.write_bytes(b"RIFF")
    now = time.time()
    store.save("a", "token:x", now - 10, now, {"call_id": "a", "turns": []}, wav_a)
    store.save("b", "token:x", now - 3 * 86_400, now - 2 * 86_400, {"call_id": "b"}, wav_b)
    found = store.get("a")
    assert found is not None and found.owner == "token:x" and found.recording == wav_a
    assert store.get("b") is None  # past retention: not served even before the purge
    assert store.purge() == 1 and not wav_b.exists()
    assert store.delete("a") and not wav_a.exists() and store.get("a") is None
    assert not store.delete("a")
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()


def test_config_keys() -> None:
    config = apply_env(CallbotConfig(), {"CALLBOT_RECORD_AUDIO": "true",
                                         "CALLBOT_RECORD_RETENTION_DAYS": "7"})
    assert config.record.audio and config.record.stored
    assert config.record.retention_days == 7
    assert not CallbotConfig().record.stored  # off by default


def test_tracing_is_off_unless_an_endpoint_is_named() -> None:
    assert not tracing_configured({})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
                                   "OTEL_SDK_DISABLED": "true"})


def span_names(bodies: list[bytes]) -> dict[str, list[dict[str, object]]]:
    """The spans in OTLP/HTTP export requests: name -> each one's attributes."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    names: dict[str, list[dict[str, object]]] = {}
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    names.setdefault(span.name, []).append(
                        {a.key: a.value.string_value or a.value.int_value
                         for a in span.attributes})
    return names


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A real OTLP/HTTP trace receiver on loopback: its base URL and the bodies it got."""
    got: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", got
    finally:
        await runner.cleanup()


async def test_traces_reach_an_otlp_http_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    async with otlp_receiver() as (url, got):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        tracer = CallTracer.from_env("smollm2-135m")
        assert tracer is not None
        trace = tracer.call("call123", "webrtc")
        trace.on_event(ev.TurnMetrics(turn_id=1, asr_ms=200.0, llm_first_token_ms=150.0,
                                      llm_done_ms=600.0, tts_first_ms=80.0,
                                      end_of_turn_ms=400.0, first_audio_ms=700.0))
        trace.end("hangup")
        await asyncio.to_thread(tracer.shutdown)  # flushes (the exporter's own thread)
    names = span_names(got)
    assert {"call", "turn", "asr", "vad.end_of_turn", "chat smollm2-135m", "tts.first_audio",
            "playout"} <= set(names)
    assert names["call"][0]["callbot.call_id"] == "call123"
    assert names["turn"][0]["callbot.call_id"] == "call123"
    assert names["chat smollm2-135m"][0]["gen_ai.operation.name"] == "chat"
