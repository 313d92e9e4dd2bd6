"""`callbot engines serve`: this process's ASR and TTS models behind OpenAI-compatible HTTP.

- `POST /v1/audio/transcriptions` (multipart: `file` = WAV, `model`, `language`,
  `response_format` json|text) -> `{"text", "language", "duration"}`
- `POST /v1/audio/speech` (JSON: `input`, `voice`, `response_format` pcm|wav) -> the audio,
  streamed (chunked) as 16-bit mono; the rate is in the `X-Sample-Rate` header
- `GET /v1/audio/voices` (not in OpenAI's API) -> `{"voices": [...]}`; `GET /v1/models`;
  `GET /healthz`

One machine can then serve the models of several call nodes (`--asr-url`/`--tts-url` of
`callbot serve`). Requests queue on the engines' worker threads (finals before previews).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import wave
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from callbot.pipeline.asr.base import SpeechRecognizer
from callbot.pipeline.audio import PIPELINE_RATE
from callbot.pipeline.engines import build_asr, build_tts
from callbot.pipeline.settings import EngineSettings
from callbot.pipeline.tts.base import SpeechSynthesizer
from callbot.signalling.errors import ApiError, json_errors

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 16 * 1024 * 1024  # 8 minutes of 16 kHz audio
MAX_INPUT_CHARS = 4096
CHUNK_BYTES = 4096


@dataclass
class EngineStats:
    transcriptions: int = 0
    syntheses: int = 0
    audio_in_s: float = 0.0
    audio_out_s: float = 0.0
    asr_busy_s: float = 0.0
    tts_busy_s: float = 0.0
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v
                for k, v in self.__dict__.items() if k != "started"} | {
            "uptime_s": round(time.monotonic() - self.started, 1)}


ASR_KEY = web.AppKey("engine_asr", SpeechRecognizer)
TTS_KEY = web.AppKey("engine_tts", SpeechSynthesizer)
STATS_KEY = web.AppKey("engine_stats", EngineStats)


def read_wav(data: bytes) -> np.ndarray:
    """16 kHz mono int16 from a WAV file (other rates/channels are converted)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2:
                raise ApiError(400, "invalid_audio", "send 16-bit PCM WAV")
            channels, rate = w.getnchannels(), w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise ApiError(400, "invalid_audio", f"'file' is not a WAV file: {exc}") from None
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1)
    if rate != PIPELINE_RATE and len(pcm):
        n = int(round(len(pcm) * PIPELINE_RATE / rate))
        pcm = np.interp(np.linspace(0, len(pcm) - 1, n), np.arange(len(pcm)), pcm)
    return np.asarray(pcm).astype(np.int16)


async def transcriptions(request: web.Request) -> web.StreamResponse:
    if not request.content_type.startswith("multipart/"):
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with 'file'")
    fields: dict[str, str] = {}
    audio: bytes | None = None
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
            continue
        data = await part.read()
        if part.name == "file":
            audio = bytes(data)
        else:
            fields[part.name] = bytes(data).decode(errors="replace")
    if audio is None:
        raise ApiError(400, "invalid_request", "'file' is missing")
    pcm = read_wav(audio)
    asr, stats = request.app[ASR_KEY], request.app[STATS_KEY]
    language = fields.get("language") or None
    if asr.languages is not None and language is not None and language not in asr.languages:
        raise ApiError(400, "unsupported_language", f"this model knows {list(asr.languages)}")
    stats.in_flight += 1
    try:
        result = await asr.transcribe(pcm, language=language,
                                      prompt=fields.get("prompt") or None)
    finally:
        stats.in_flight -= 1
    stats.transcriptions += 1
    stats.audio_in_s += result.audio_ms / 1000
    stats.asr_busy_s += result.compute_ms / 1000
    if fields.get("response_format") == "text":
        return web.Response(text=result.text)
    return web.json_response({"text": result.text, "language": result.language,
                              "duration": round(result.audio_ms / 1000, 3)})


async def speech(request: web.Request) -> web.StreamResponse:
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object")
    text, voice, fmt = body.get("input"), body.get("voice"), body.get("response_format", "pcm")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_INPUT_CHARS:
        raise ApiError(400, "invalid_request",
                       f"'input' must be non-empty text of at most {MAX_INPUT_CHARS} characters")
    tts, stats = request.app[TTS_KEY], request.app[STATS_KEY]
    if voice is not None and voice not in tts.voices:
        raise ApiError(400, "invalid_voice", f"'voice' must be one of {list(tts.voices)}")
    if fmt not in ("pcm", "wav"):
        raise ApiError(400, "unsupported_format", "response_format must be 'pcm' or 'wav'")
    stats.in_flight += 1
    try:
        audio = await tts.synthesize(text, voice=voice)
    finally:
        stats.in_flight -= 1
    stats.syntheses += 1
    stats.audio_out_s += audio.seconds
    stats.tts_busy_s += audio.compute_ms / 1000
    pcm = np.ascontiguousarray(audio.pcm, dtype="<i2").tobytes()
    response = web.StreamResponse(headers={
        "Content-Type": "audio/pcm" if fmt == "pcm" else "audio/wav",
        "X-Sample-Rate": str(audio.sample_rate),
    })
    response.enable_chunked_encoding()
    await response.prepare(request)
    if fmt == "wav":
        header = io.BytesIO()
        with wave.open(header, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(audio.sample_rate)
            w.writeframes(b"")
        head = bytearray(header.getvalue())
        head[4:8] = (36 + len(pcm)).to_bytes(4, "little")
        head[40:44] = len(pcm).to_bytes(4, "little")
        await response.write(bytes(head))
    for start in range(0, len(pcm), CHUNK_BYTES):
        await response.write(pcm[start:start + CHUNK_BYTES])
    await response.write_eof()
    return response


async def voices(request: web.Request) -> web.Response:
    return web.json_response({"voices": list(request.app[TTS_KEY].voices)})


async def models(request: web.Request) -> web.Response:
    asr = request.app[ASR_KEY]
    return web.json_response({"object": "list", "data": [
        {"id": getattr(asr, "name", "asr"), "object": "model", "owned_by": "callbot"},
        {"id": "tts-1", "object": "model", "owned_by": "callbot"}]})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", **request.app[STATS_KEY].as_dict()})


def create_engine_app(asr: SpeechRecognizer, tts: SpeechSynthesizer) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_UPLOAD_BYTES)
    app[ASR_KEY], app[TTS_KEY], app[STATS_KEY] = asr, tts, EngineStats()
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_get("/v1/audio/voices", voices)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    return app


def load_local(settings: EngineSettings) -> tuple[SpeechRecognizer, SpeechSynthesizer]:
    """Blocking: the local models (never remote ones: this process is the server)."""
    local = EngineSettings(asr_model=settings.asr_model, asr_threads=settings.asr_threads,
                           tts_voice=settings.tts_voice,
                           tts_length_scale=settings.tts_length_scale)
    asr, tts = build_asr(local), build_tts(local)
    asr.warm_up()
    tts.warm_up()
    return asr, tts


async def serve_engines(settings: EngineSettings, host: str, port: int) -> None:
    import signal

    print("callbot engines: loading models...", flush=True)
    asr, tts = await asyncio.to_thread(load_local, settings)
    runner = web.AppRunner(create_engine_app(asr, tts), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"callbot engines: ready on http://{host}:{port}/v1 (asr {settings.asr_model}, "
          f"voices {list(tts.voices)})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    asr.close()
    tts.close()
