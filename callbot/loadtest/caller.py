"""A synthetic caller: a real aiortc peer that calls a callbot server through the public
HTTP contract, speaks recorded audio in real time, and times what it hears back.

Used by the tests, `callbot loadtest` and the benchmarks. All times are the caller's own
`time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from callbot.rtc.ice import IceServer, rtc_configuration
from callbot.rtc.resample import frame_to_mono, mono_resampler, resample_pcm
from callbot.rtc.tracks import FRAME_SAMPLES, WEBRTC_RATE, PacedAudioTrack

VOICE_DBFS = -45.0  # a received frame louder than this is the bot talking
GAP_S = 0.06  # a pause this long between received frames is a lost/late-frame gap


class CallFailed(RuntimeError):
    """The call did not start: `status` and `error` (the server's JSON error) when it refused."""

    def __init__(self, message: str, *, status: int | None = None,
                 error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error or {}


class MicrophoneTrack(PacedAudioTrack):
    """The caller's microphone: paced like the bot's voice, and it remembers when each
    utterance actually went out."""

    def __init__(self) -> None:
        super().__init__()
        self._marks: collections.deque[tuple[int, asyncio.Future[float]]] = collections.deque()
        self._samples_out = 0
        # A speakerphone without echo cancellation: what the caller hears comes back into
        # this microphone, `echo_gain` times as loud, `echo_delay_s` later (0: no echo).
        self.echo_gain = 0.0
        self.echo_delay_s = 0.12
        self._echo: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._echo_now = np.zeros(0, dtype=np.float32)

    def hear(self, pcm16k: np.ndarray, arrived: float) -> None:
        """What the loudspeaker just played (16 kHz): back into the mic later, if echoing."""
        if self.echo_gain > 0 and pcm16k.size:
            loud = np.repeat(pcm16k.astype(np.float32), WEBRTC_RATE // 16_000) * self.echo_gain
            self._echo.append((arrived + self.echo_delay_s, loud))

    def say(self, pcm: np.ndarray, sample_rate: int) -> asyncio.Future[float]:
        """Queue an utterance; the future gives the time its last sample was sent."""
        audio = resample_pcm(pcm, sample_rate, WEBRTC_RATE)
        self.enqueue(audio, WEBRTC_RATE)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._marks.append((self._samples_out + self._queued_total(), future))
        return future

    def _queued_total(self) -> int:
        return int(round(self.pending_seconds() * WEBRTC_RATE))

    def _take(self, n: int) -> np.ndarray:
        had = int(round(self.pending_seconds() * WEBRTC_RATE))
        out = super()._take(n)
        if self._echo or self._echo_now.size:
            out = self._mix_echo(out)
        self._samples_out += min(n, had)
        now = time.monotonic()
        while self._marks and self._marks[0][0] <= self._samples_out:
            _, future = self._marks.popleft()
            if not future.done():
                future.set_result(now)
        return out

    def _mix_echo(self, out: np.ndarray) -> np.ndarray:
        now = time.monotonic()
        while self._echo and self._echo[0][0] <= now:
            self._echo_now = np.concatenate((self._echo_now, self._echo.popleft()[1]))
        take = self._echo_now[: out.size]
        self._echo_now = self._echo_now[take.size:]
        mixed = out.astype(np.float32)
        mixed[: take.size] += take
        return np.clip(mixed, -32768, 32767).astype(np.int16)


@dataclass
class HeardAudio:
    """What the caller received: a loudness per 20 ms frame, with arrival times."""

    times: list[float] = field(default_factory=list)
    dbfs: list[float] = field(default_factory=list)
    pcm: list[np.ndarray] = field(default_factory=list)  # 16 kHz mono, for transcription
    gaps: int = 0
    keep_pcm: bool = True

    def first_voice_after(self, t: float, *, min_frames: int = 2) -> float | None:
        """Arrival time of the first of `min_frames` consecutive loud frames after `t`."""
        run = 0
        for arrived, level in zip(self.times, self.dbfs, strict=True):
            if arrived < t:
                continue
            run = run + 1 if level > VOICE_DBFS else 0
            if run == 1:
                start = arrived
            if run >= min_frames:
                return start
        return None

    def silence_after(self, t: float, *, min_frames: int = 3) -> float | None:
        """Arrival time of the first frame of a silent run after `t` (bot stopped)."""
        run = 0
        for arrived, level in zip(self.times, self.dbfs, strict=True):
            if arrived < t:
                continue
            run = run + 1 if level <= VOICE_DBFS else 0
            if run == 1:
                start = arrived
            if run >= min_frames:
                return start
        return None

    def audio_between(self, start: float, end: float) -> np.ndarray:
        chunks = [p for t, p in zip(self.times, self.pcm, strict=False) if start <= t <= end]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


class SyntheticCaller:
    def __init__(
        self,
        base_url: str,
        *,
        options: dict[str, Any] | None = None,
        ice_servers: tuple[IceServer, ...] = (),
        keep_audio: bool = True,
        send_video: bool = False,
        video_image: np.ndarray | None = None,  # send this still picture as the camera
        headers: dict[str, str] | None = None,  # e.g. Authorization for the POST
        relay_only: bool = False,  # only TURN-relayed candidates (iceTransportPolicy "relay")
    ) -> None:
        self.relay_only = relay_only
        self.base_url = base_url.rstrip("/")
        self.options = options
        self.headers = headers
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.mic = MicrophoneTrack()
        self.heard = HeardAudio(keep_pcm=keep_audio)
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.call_id: str | None = None
        self.offer_sent_at: float | None = None
        self.connected_at: float | None = None
        self.first_audio_at: float | None = None
        self._event_waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._channel = self.pc.createDataChannel("events")
        self._channel.on("message", self._on_message)
        self._send_video = send_video or video_image is not None
        self._video_image = video_image
        self.camera: MediaStreamTrack | None = None
        self.bot_frames: list[tuple[float, np.ndarray]] = []  # the bot's video, as received
        self.keep_bot_frames = 8  # the newest N decoded frames are kept
        self.bot_frames_received = 0

    async def connect(self, timeout: float = 20.0) -> str:
        pc = self.pc
        pc.addTrack(self.mic)
        if self._send_video:
            from .sources import ColorBarsTrack, ImageTrack

            self.camera = (ColorBarsTrack() if self._video_image is None
                           else ImageTrack(self._video_image))
            pc.addTrack(self.camera)
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        if self.relay_only:
            sdp = self._relay_only(sdp)
        self.offer_sent_at = time.monotonic()
        body: dict[str, Any] = {"sdp": sdp, "type": "offer"}
        if self.options:
            body["options"] = self.options
        async with aiohttp.ClientSession() as http, http.post(
            f"{self.base_url}/v1/calls", json=body, headers=self.headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            answer = await resp.json()
            if resp.status != 201:
                raise CallFailed(f"server answered {resp.status}: {answer}", status=resp.status,
                                 error=answer.get("error") if isinstance(answer, dict) else None)
        self.call_id = answer["call_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        deadline = time.monotonic() + timeout
        while pc.connectionState != "connected" or self._channel.readyState != "open":
            if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                raise CallFailed(f"call did not connect (state {pc.connectionState})")
            await asyncio.sleep(0.02)
        self.connected_at = time.monotonic()
        return self.call_id

    def _relay_only(self, sdp: str) -> str:
        """What a browser with iceTransportPolicy "relay" does (aiortc has no such policy):
        only relayed candidates are offered, and only they are used for checks."""
        for transceiver in self.pc.getTransceivers():
            self._keep_relay(transceiver.sender.transport.transport.iceGatherer)
        if self.pc.sctp is not None:
            self._keep_relay(self.pc.sctp.transport.transport.iceGatherer)
        lines = sdp.split("\r\n")
        kept = [line for line in lines
                if not line.startswith("a=candidate:") or " typ relay" in line]
        if not any(line.startswith("a=candidate:") for line in kept):
            raise CallFailed("no relayed candidate: the TURN server gave no allocation")
        return "\r\n".join(kept)

    @staticmethod
    def _keep_relay(gatherer: Any) -> None:
        connection = gatherer._connection  # aioice.Connection: no public way to drop them
        connection._local_candidates = [c for c in connection._local_candidates
                                        if c.type == "relay"]

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.ensure_future(self._listen(track)))
        elif track.kind == "video":
            self._tasks.append(asyncio.ensure_future(self._watch(track)))

    async def _watch(self, track: MediaStreamTrack) -> None:
        """The bot's video: decoded frames are counted; the newest few are kept as RGB."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.bot_frames_received += 1
            if self.keep_bot_frames:
                assert isinstance(frame, VideoFrame)
                self.bot_frames.append((time.monotonic(), frame.to_ndarray(format="rgb24")))
                del self.bot_frames[: -self.keep_bot_frames]

    async def _listen(self, track: MediaStreamTrack) -> None:
        resampler = mono_resampler(16_000)
        last: float | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            assert isinstance(frame, AudioFrame)
            pcm = frame_to_mono(frame, resampler)
            level = _dbfs(pcm)
            if last is not None and now - last > GAP_S and self.first_audio_at is not None:
                self.heard.gaps += 1
            last = now
            if self.first_audio_at is None:
                self.first_audio_at = now
            self.heard.times.append(now)
            self.heard.dbfs.append(level)
            if self.heard.keep_pcm:
                self.heard.pcm.append(pcm)
            self.mic.hear(pcm, now)

    def _on_message(self, message: str | bytes) -> None:
        data = json.loads(message)
        self.events.append((time.monotonic(), data))
        for waiter in list(self._event_waiters):
            name, future = waiter
            if data.get("type") == name and not future.done():
                future.set_result(data)
                self._event_waiters.remove(waiter)

    async def wait_event(self, name: str, timeout: float = 30.0, *, after: int = 0
                         ) -> dict[str, Any]:
        """The next `name` event, or one already received at index >= `after`."""
        for _, data in self.events[after:]:
            if data.get("type") == name:
                return data
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._event_waiters.append((name, future))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if (name, future) in self._event_waiters:
                self._event_waiters.remove((name, future))

    def event_time(self, name: str, after: float = 0.0) -> float | None:
        for t, data in self.events:
            if t >= after and data.get("type") == name:
                return t
        return None

    def events_of(self, name: str) -> list[dict[str, Any]]:
        return [d for _, d in self.events if d.get("type") == name]

    def send(self, message: dict[str, Any]) -> None:
        self._channel.send(json.dumps(message))

    async def say(self, pcm: np.ndarray, sample_rate: int) -> float:
        """Speak and wait until the last sample has gone out; returns that time."""
        return await self.mic.say(pcm, sample_rate)

    async def hangup(self, *, delete: bool = True) -> None:
        if delete and self.call_id:
            try:
                async with aiohttp.ClientSession() as http:
                    await http.delete(f"{self.base_url}/v1/calls/{self.call_id}",
                                      headers=self.headers,  # hang-up is scoped to the caller
                                      timeout=aiohttp.ClientTimeout(total=5))
            except (aiohttp.ClientError, TimeoutError):
                pass
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def speech_end_offset(pcm: np.ndarray, sample_rate: int, threshold_dbfs: float = -40.0) -> float:
    """Seconds from the start of a clip to the end of its last loud 20 ms window."""
    n = sample_rate // 50
    last = 0
    for i in range(0, len(pcm) - n + 1, n):
        if _dbfs(pcm[i : i + n]) > threshold_dbfs:
            last = i + n
    return last / sample_rate


def speech_start_offset(pcm: np.ndarray, sample_rate: int, threshold_dbfs: float = -40.0
                        ) -> float:
    """Seconds from the start of a clip to its first loud 20 ms window."""
    n = sample_rate // 50
    for i in range(0, len(pcm) - n + 1, n):
        if _dbfs(pcm[i : i + n]) > threshold_dbfs:
            return i / sample_rate
    return 0.0


def _dbfs(pcm: np.ndarray) -> float:
    if pcm.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 20 * np.log10(rms / 32768) if rms > 0 else -120.0


__all__ = [
    "CallFailed", "SyntheticCaller", "speech_end_offset", "speech_start_offset", "FRAME_SAMPLES",
]
