"""Model servers that answer instantly: what a call node costs without its models.

One aiohttp process that speaks the three OpenAI-compatible APIs a call node uses for remote
engines (docs/SCALING.md): `POST /v1/audio/transcriptions` (a fixed question, JSON),
`POST /v1/audio/speech` (PCM at 24 kHz: a soft tone as long as the text would take to say,
~65 ms per character, streamed in 20 ms chunks) and `POST /v1/chat/completions` (a fixed
two-sentence reply as server-sent events). `GET /v1/audio/voices` lists one voice. No model
runs: with it, `bench.node_cost` measures only callbot's own work (media, Opus, VAD, pacing,
events, turn logic). Counters at `GET /healthz`.

    python3 -m bench.stub_engines --port 9100
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from aiohttp import web

RATE = 24_000
REPLY = "The capital of France is Paris. Is there anything else you would like to know?"
QUESTION = "What is the capital of France?"
MS_PER_CHAR = 65.0


def speech_pcm(text: str) -> bytes:
    """A soft 220 Hz tone with a syllable-like envelope, the length of the text spoken."""
    n = int(RATE * len(text) * MS_PER_CHAR / 1000)
    t = np.arange(n) / RATE
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return (3000 * envelope * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


def make_app() -> web.Application:
    counts = {"transcriptions": 0, "syntheses": 0, "completions": 0}

    async def transcriptions(request: web.Request) -> web.Response:
        await request.read()
        counts["transcriptions"] += 1
        return web.json_response({"text": QUESTION, "language": "en"})

    async def speech(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        counts["syntheses"] += 1
        pcm = speech_pcm(str(body.get("input", "")))
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm",
                                           "X-Sample-Rate": str(RATE)})
        await resp.prepare(request)
        step = RATE * 2 // 50  # 20 ms
        for i in range(0, len(pcm), step * 25):  # 0.5 s per write
            await resp.write(pcm[i:i + step * 25])
        await resp.write_eof()
        return resp

    async def completions(request: web.Request) -> web.StreamResponse:
        await request.read()
        counts["completions"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in REPLY.split(" "):
            event = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def voices(request: web.Request) -> web.Response:
        return web.json_response({"voices": ["stub"]})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "stub"}]})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application(client_max_size=16 << 20)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/audio/voices", voices)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
