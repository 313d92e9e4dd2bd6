"""Remote ASR/TTS engines against a real `callbot engines serve` (real Whisper and Piper in
another process), their failure handling against small real aiohttp servers that misbehave
on purpose, and a real call whose speech models are all on the engine server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from callbot.pipeline.asr.remote import RemoteRecognizer
from callbot.pipeline.errors import RemoteEngineError
from callbot.pipeline.remote_http import RemoteSettings
from callbot.pipeline.text import word_error_rate
from callbot.pipeline.tts.remote import RemoteSynthesizer
from support import speech
from tests.cluster_helpers import LOOPBACK, ROOT, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def engine_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("engines") / "engines.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "callbot", "engines", "serve", "--host", LOOPBACK,
             "--port", str(port), "--log-level", "WARNING"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        url = f"http://{LOOPBACK}:{port}/v1"
        deadline = time.monotonic() + 90
        while "ready" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url
        proc.terminate()
        proc.wait(20)


async def test_remote_asr_and_tts_round_trip(engine_server: str) -> None:
    settings = RemoteSettings(base_url=engine_server, timeout_s=20)
    asr = RemoteRecognizer(settings)
    tts = RemoteSynthesizer(settings)
    await asyncio.to_thread(tts.warm_up)  # learns the server's voices
    assert tts.voices
    question = speech.espeak("How many legs does a spider have?", 16_000).padded(0.3, 0.3)
    heard = await asr.transcribe(question.pcm)
    speech.assert_heard(heard.text, "how many legs does a spider have")
    assert heard.audio_ms == pytest.approx(len(question.pcm) / 16, rel=0.01)
    spoken = await tts.synthesize("The weather is sunny today.")
    assert spoken.sample_rate == 22_050  # Piper's rate, from X-Sample-Rate
    assert 1.0 < spoken.seconds < 4.0
    assert np.abs(spoken.pcm.astype(np.int32)).max() > 3000  # a voice, not silence
    # What the TTS said, heard by the ASR: the two endpoints agree.
    pcm16 = np.interp(np.linspace(0, len(spoken.pcm) - 1, int(spoken.seconds * 16_000)),
                      np.arange(len(spoken.pcm)), spoken.pcm.astype(np.float64))
    back = await asr.transcribe(pcm16.astype(np.int16))
    assert word_error_rate("the weather is sunny today", back.text) <= 0.4, back
    assert (asr.requests, tts.requests) == (2, 1)  # nothing retried
    with pytest.raises(RemoteEngineError, match="invalid_voice"):
        await tts.synthesize("Hi.", voice="nobody")
    assert tts.requests == 2  # a 400 is not retried
    await asr.aclose()
    await tts.aclose()


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A real HTTP server that misbehaves in the ways a model server can."""
    hits: dict[str, int] = {}

    async def transcribe_once_503(request: web.Request) -> web.Response:
        hits["asr"] = hits.get("asr", 0) + 1
        await request.read()
        if hits["asr"] == 1:
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        return web.json_response({"text": " hello there ", "language": "en"})

    async def slow(request: web.Request) -> web.Response:
        hits["slow"] = hits.get("slow", 0) + 1
        await asyncio.sleep(5)
        return web.json_response({"text": "late"})

    async def speech_breaks(request: web.Request) -> web.StreamResponse:
        hits["tts"] = hits.get("tts", 0) + 1
        response = web.StreamResponse(headers={"X-Sample-Rate": "16000"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"\x10\x00" * 4000)  # a quarter second of audio, then it dies
        assert request.transport is not None
        request.transport.abort()
        return response

    async def speech_refused_first(request: web.Request) -> web.StreamResponse:
        hits["tts2"] = hits.get("tts2", 0) + 1
        if hits["tts2"] == 1:
            return web.json_response({"error": {"message": "busy"}}, status=429)
        body = json.loads(await request.read())
        assert body["response_format"] == "pcm" and body["input"] == "Hello."
        return web.Response(body=b"\x00\x01" * 2400)  # no X-Sample-Rate: OpenAI's 24 kHz

    app = web.Application()
    app.router.add_post("/ok/v1/audio/transcriptions", transcribe_once_503)
    app.router.add_post("/slow/v1/audio/transcriptions", slow)
    app.router.add_post("/broken/v1/audio/speech", speech_breaks)
    app.router.add_post("/busy/v1/audio/speech", speech_refused_first)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://{LOOPBACK}:{port}", hits
    await runner.cleanup()


async def test_retries_timeouts_and_no_double_speech(flaky: tuple[str, dict[str, int]]) -> None:
    base, hits = flaky
    pcm = np.zeros(8000, dtype=np.int16)
    asr = RemoteRecognizer(RemoteSettings(f"{base}/ok/v1", retry_backoff_s=0.01))
    result = await asr.transcribe(pcm)
    assert result.text == "hello there" and hits["asr"] == 2  # the 503 was retried once

    slow = RemoteRecognizer(RemoteSettings(f"{base}/slow/v1", timeout_s=0.3, retries=1,
                                           retry_backoff_s=0.01))
    started = time.monotonic()
    with pytest.raises(RemoteEngineError, match="failed after 2 attempts: timed out"):
        await slow.transcribe(pcm)
    assert time.monotonic() - started < 2 and hits["slow"] == 2

    broken = RemoteSynthesizer(RemoteSettings(f"{base}/broken/v1", retries=3),
                               voices=("v",))
    with pytest.raises(RemoteEngineError, match="not retried"):
        await broken.synthesize("Hello.")
    assert hits["tts"] == 1  # audio had arrived: never asked again (never said twice)

    busy = RemoteSynthesizer(RemoteSettings(f"{base}/busy/v1", retry_backoff_s=0.01),
                             voices=("v",))
    audio = await busy.synthesize("Hello.")
    assert hits["tts2"] == 2 and audio.sample_rate == 24_000 and len(audio.pcm) == 2400

    dead = RemoteRecognizer(RemoteSettings(f"http://{LOOPBACK}:{free_port()}/v1", retries=0))
    with pytest.raises(RemoteEngineError, match="failed after 1 attempts"):
        await dead.transcribe(pcm)
    for engine in (asr, slow, broken, busy, dead):
        await engine.aclose()


def _start_node(port: int, engine_url: str, out: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "callbot", "serve", "--port", str(port), "--ice-host",
         LOOPBACK, "--asr-url", engine_url, "--tts-url", engine_url, "--log-level", "WARNING"],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})


async def test_call_with_remote_speech_models(engine_server: str, tmp_path: Path) -> None:
    """`callbot serve --asr-url --tts-url`: a real call, real speech, models on the server."""
    port = free_port()
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        node = _start_node(port, engine_server, out)
        try:
            deadline = time.monotonic() + 60
            while "ready" not in log.read_text():
                assert node.poll() is None and time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
            report_path = tmp_path / "report.json"
            loadtest = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callbot", "loadtest", "--url",
                f"http://{LOOPBACK}:{port}", "--calls", "1", "--json", str(report_path),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out_text, _ = await asyncio.wait_for(loadtest.communicate(), 90)
        finally:
            node.terminate()
            node.wait(20)
    report = json.loads(report_path.read_text())
    result = report["results"][0]
    assert result["ok"], (result["reason"], out_text.decode()[-1500:])
    turn = result["turns"][0]
    assert turn["wer"] <= 0.3, turn
    assert 0 < turn["v2v_ms"] < 10_000
    assert turn["server"]["asr_ms"] > 0
