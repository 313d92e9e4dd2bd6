"""A transport-only server for `bench.capacity --transport-only`: the same call API and media
path as callbot (aiortc peer, paced outgoing track, audio-level fix), but the pipeline is an
echo of the caller's audio: same size of audio both ways, no models.

    python3 -m bench.echo_server --port 8090 --ice-host 127.0.0.1
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection

from callbot.rtc import audio_level
from callbot.rtc.ice import restrict_host_addresses
from callbot.rtc.peer import accept_offer, create_answer, new_peer_connection
from callbot.rtc.tracks import FRAME_SAMPLES, WEBRTC_RATE, PacedAudioTrack, pump_audio

CALLS = web.AppKey("calls", dict)


class EchoCall:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.pc: RTCPeerConnection = new_peer_connection()
        self.output = PacedAudioTrack()
        self.tasks: list[asyncio.Task[Any]] = []

    async def answer(self, sdp: str) -> str:
        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                self.tasks.append(asyncio.ensure_future(pump_audio(
                    track, lambda pcm: self.output.enqueue(pcm, WEBRTC_RATE),
                    rate=WEBRTC_RATE, frame_samples=FRAME_SAMPLES)))

        @self.pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            pass

        await accept_offer(self.pc, sdp)
        self.pc.addTrack(self.output)
        return await create_answer(self.pc)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.output.stop()
        await self.pc.close()


async def create_call(request: web.Request) -> web.Response:
    body = await request.json()
    call = EchoCall()
    request.app[CALLS][call.id] = call
    sdp = await call.answer(body["sdp"])
    return web.json_response({"call_id": call.id, "sdp": sdp, "type": "answer"}, status=201)


async def delete_call(request: web.Request) -> web.Response:
    call = request.app[CALLS].pop(request.match_info["call_id"], None)
    if call is None:
        return web.json_response({"error": "call_not_found"}, status=404)
    await call.close()
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "calls": len(request.app[CALLS])})


def create_echo_app(ice_hosts: list[str] | None = None) -> web.Application:
    app = web.Application()
    app[CALLS] = {}
    app.router.add_post("/v1/calls", create_call)
    app.router.add_delete("/v1/calls/{call_id}", delete_call)
    app.router.add_get("/healthz", healthz)

    async def start(app: web.Application) -> None:
        audio_level.install()
        if ice_hosts:
            restrict_host_addresses(ice_hosts)

    async def stop(app: web.Application) -> None:
        await asyncio.gather(*(c.close() for c in app[CALLS].values()), return_exceptions=True)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--ice-host", action="append", dest="ice_hosts")
    args = parser.parse_args()
    web.run_app(create_echo_app(args.ice_hosts), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
