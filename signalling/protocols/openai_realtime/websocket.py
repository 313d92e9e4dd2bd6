"""A call carried by a Realtime WebSocket: events and base64 PCM16 audio in one socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSMsgType, web

from callbot.signalling.protocols.openai_realtime.audio import StreamingOutput

if TYPE_CHECKING:
    from callbot.signalling.calls.call import Call

log = logging.getLogger(__name__)

MAX_UNSENT = 5000  # events queued for a client that does not read: the call is ended


class WebSocketTransport:
    kind = "websocket"

    def __init__(self, ws: web.WebSocketResponse, output_rate: int) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._output = StreamingOutput(self._send_audio, output_rate)
        self.audio_sink: Callable[[np.ndarray], None] | None = None  # the protocol's audio
        self._call: Call | None = None
        self._overflowed = False
        self._ended = asyncio.Event()  # the call closed the socket (a limit, a hang-up)

    @property
    def output(self) -> StreamingOutput:
        return self._output

    def _send_audio(self, pcm: np.ndarray) -> None:
        if self.audio_sink is not None:
            self.audio_sink(pcm)

    def bind(self, call: Call) -> None:
        self._call = call
        call.transport_state("active")  # the socket is open: the call is live

    def send(self, message: str) -> None:
        if self._queue.qsize() >= MAX_UNSENT:
            if not self._overflowed and self._call is not None:
                self._overflowed = True
                self._call.transport_lost("slow_client")
            return
        self._queue.put_nowait(message)

    def last_heard(self, now: float) -> float | None:
        return None  # aiohttp's heartbeat (ping/pong) closes a socket whose peer is gone

    def send_stalled_since(self) -> float | None:
        return None  # an unread queue ends the call at once (`send`)

    def describe(self) -> dict[str, Any]:
        return {}

    async def serve(self) -> str:
        """Read and write until the client or the call ends it; why it ended."""
        ws, call = self._ws, self._call
        assert call is not None

        async def writer() -> None:
            while True:
                await ws.send_str(await self._queue.get())

        async def reader() -> None:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    call.peer_message(msg.data)
                else:
                    break

        writing = asyncio.ensure_future(writer())
        reading = asyncio.ensure_future(reader())
        ending = asyncio.ensure_future(self._ended.wait())
        try:
            done, _ = await asyncio.wait({writing, reading, ending},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writing, reading, ending):
                task.cancel()
            await asyncio.gather(writing, reading, ending, return_exceptions=True)
        if writing in done and writing.exception() is not None:
            return "disconnected"
        return "hangup"

    async def close(self) -> None:
        self._ended.set()
        # what is already queued (the last events) goes out before the close
        with contextlib.suppress(Exception):
            while not self._queue.empty() and not self._ws.closed:
                await self._ws.send_str(self._queue.get_nowait())
        await self._ws.close()
