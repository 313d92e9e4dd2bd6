"""One live call: its peer connection, media tasks, event channel and conversation.

A call owns everything it starts; `close()` releases all of it (tasks, peer connection,
pipeline work), whatever ended the call: hang-up, ICE failure, DELETE, a timeout, or a crash
inside this call.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from callbot.pipeline import events as ev
from callbot.pipeline.audio import FRAME_SAMPLES, PIPELINE_RATE
from callbot.pipeline.augment import ContextSource
from callbot.pipeline.calllog import CALL_ID
from callbot.pipeline.engines import Engines
from callbot.pipeline.lang import call_engines
from callbot.pipeline.llm.tools import Tool
from callbot.pipeline.safety.guard import TurnGuard
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.vision import VisionEngine, VisionSource
from callbot.rtc.bot_video import BotVideoTrack, CaptionBoard
from callbot.rtc.ice import IceServer, announce_public_ip
from callbot.rtc.peer import (
    accept_offer,
    create_answer,
    new_peer_connection,
    shorten_audio_jitter_buffer,
)
from callbot.rtc.tracks import LatestVideoFrame, PacedAudioTrack, drain_video, pump_audio

from . import safejson
from .channel_limits import TokenBucket
from .config import CallbotConfig
from .sight import camera_frames, show_event

if TYPE_CHECKING:
    from callbot.pipeline.knowledge.source import PassageProvider

log = logging.getLogger(__name__)

EVENTS_LABEL = "events"


class EventProtocol(Protocol):
    """Another wire protocol on the call's data channel (e.g. the OpenAI Realtime events):
    it gets the session's events and the channel's messages, and may take the caller's
    audio first (push-to-talk)."""

    label: str  # the data channel it speaks on

    def on_event(self, event: ev.Event) -> None: ...

    def on_message(self, message: str | bytes) -> None: ...

    def feed(self, frame: np.ndarray) -> None: ...


@dataclass(frozen=True)
class CallOptions:
    """Per-call choices, already validated against what the server allows."""

    system_prompt: str | None = None
    voice: str | None = None
    language: str | None = None
    tools: tuple[Tool, ...] = ()  # offered to the LLM (OpenAI-compatible backend)
    knowledge: bool = True  # False: this call does not use the server's knowledge base
    passages: PassageProvider | None = None  # the app's own passages per turn (text -> list)
    context_sources: tuple[ContextSource, ...] = ()  # more per-turn context (see augment.py)
    caller_id: str | None = None  # who calls, for caller memory (default: the token's `sub`)
    memory: bool = True  # False: this call is neither given nor leaves a memory


class Call:
    def __init__(
        self,
        config: CallbotConfig,
        engines: Engines,
        options: CallOptions,
        on_closed: Callable[[Call], Awaitable[None] | None] | None = None,
        on_event: Callable[[Call, ev.Event], None] | None = None,
        ice_servers: Sequence[IceServer] | None = None,  # None: config.ice_servers
        *,
        guards: Sequence[TurnGuard] = (),  # safety checks of every turn and bot sentence
        languages: tuple[str, ...] | None = None,  # what the call may be detected as
        voices_by_language: Mapping[str, str] | None = None,
        context_sources: Sequence[ContextSource] = (),
        caller_id: str | None = None,  # set only when this call's caller is remembered
        vision: VisionEngine | None = None,  # reads the caller's camera when a turn asks
    ) -> None:
        self.id = uuid.uuid4().hex
        self.caller_id = caller_id
        self.config = config
        self.options = options
        self.started_at = time.monotonic()
        self.created_wall = time.time()
        self.state = "new"
        self.close_reason: str | None = None
        self._on_closed = on_closed
        self._on_event = on_event
        self.pc: RTCPeerConnection = new_peer_connection(
            config.ice_servers if ice_servers is None else ice_servers)
        self.output = PacedAudioTrack()
        if languages is None:
            languages = (options.language,) if options.language else ("en",)
        per_call, self.language = call_engines(
            engines, allowed=languages, language=options.language, voice=options.voice,
            voices_by_language=voices_by_language)
        vision_settings = config.vision
        self.video = LatestVideoFrame(history_s=vision_settings.history_s)
        self.vision = None if vision is None else VisionSource(
            vision, functools.partial(camera_frames, self.video),
            timeout_s=vision_settings.timeout_s, stale_s=vision_settings.stale_s)
        self.bot_video: BotVideoTrack | None = None  # added if the caller offers video
        self.session = VoiceSession(
            per_call,
            output=self.output,
            emit=self.send_event,
            settings=config.turn,
            system_prompt=options.system_prompt,
            voice=options.voice,
            language=options.language,
            tools=options.tools,
            guards=guards,
            language_state=self.language,
            context_sources=([self.vision] if self.vision is not None else [])
            + list(context_sources),
        )
        self.listeners: list[Callable[[ev.Event], None]] = []  # CallHandle subscribers
        self.protocol: EventProtocol | None = None  # None: callbot's own `events` channel
        self._channel: RTCDataChannel | None = None
        self._unsent: list[str] = []
        limits = config.limits
        self._messages_in = TokenBucket(limits.channel_messages_per_s, limits.channel_burst)
        self._typed_turns = TokenBucket(limits.typed_turns_per_minute / 60, limits.typed_turn_burst)
        self._limit_error_at = -1e9  # when the last rate_limited error event went out
        self._send_full_since: float | None = None  # the send buffer is over its bound since
        self.events_dropped = 0  # events not sent: buffer full, or over the peer's size limit
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_audio = time.monotonic()  # the caller's last speech or typed turn
        self._idle_warned = False
        self._packets_in = -1  # packets received from the peer, as last counted
        self._packets_at = time.monotonic()  # when that count last grew
        self._closing: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.audio_frames_in = 0

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.started_at

    def describe(self) -> dict[str, Any]:
        return {
            "call_id": self.id,
            "state": self.state,
            "bot_state": self.session.state,
            "language": self.language.current,
            "age_s": round(self.age_s, 1),
            "ice_state": self.pc.iceConnectionState,
            "audio_frames_in": self.audio_frames_in,
            "audio_frames_out": self.output.frames_sent,
            "video_frames_in": self.video.frames_received,
            "video_frames_out": self.bot_video.frames_sent if self.bot_video else 0,
        }

    # ---- set-up -------------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """Negotiate; on any failure the call is closed before the error propagates."""
        CALL_ID.set(self.id)  # tasks started from here on (media, events, hooks) log with it
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await accept_offer(pc, offer_sdp)
            shorten_audio_jitter_buffer(pc)
            pc.addTrack(self.output)
            if self.config.vision.bot_video and any(
                    t.kind == "video" for t in pc.getTransceivers()):
                # The caller offered video: answer with the bot's captions and state.
                self.bot_video = BotVideoTrack(CaptionBoard(),
                                               fps=self.config.vision.bot_video_fps)
                pc.addTrack(self.bot_video)
            sdp = await create_answer(pc)
            if self.config.ice_public_ip:
                sdp = announce_public_ip(sdp, self.config.ice_public_ip)
        except BaseException:
            await self.close("negotiation_failed")
            raise
        self.state = "connecting"
        self._spawn(self._watchdog(), "watchdog")
        return sdp

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(
                pump_audio(track, self._on_audio, rate=PIPELINE_RATE, frame_samples=FRAME_SAMPLES),
                "audio-in",
            )
        elif track.kind == "video":
            self._spawn(drain_video(track, self.video), "video-in")

    def _on_audio(self, frame: Any) -> None:
        self.audio_frames_in += 1
        if self.protocol is not None:
            self.protocol.feed(frame)
        else:
            self.session.feed(frame)
        if self.session.hearing_speech:  # silence (a muted microphone) is not activity
            self._mark_active()

    def _mark_active(self) -> None:
        self._last_audio = time.monotonic()
        self._idle_warned = False

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        protocol = self.protocol
        if channel.label != (EVENTS_LABEL if protocol is None else protocol.label):
            return
        self._channel = channel
        channel.on("message", self._on_message if protocol is None else protocol.on_message)
        if channel.readyState == "open":
            self._flush_events()
        else:
            channel.on("open", self._flush_events)

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.state = "active"
        elif state in ("failed", "closed"):
            await self.close(f"ice_{state}")

    async def _watchdog(self) -> None:
        """Ends calls that never connect, go quiet, drop off, or run too long."""
        limits = self.config.limits
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            heard_from_peer = self._heard_from_peer(now)
            if self.state == "active" and now - heard_from_peer > limits.disconnect_grace_s:
                return await self.close("disconnected")
            if self.state == "connecting" and self.age_s > limits.setup_timeout_s:
                return await self.close("setup_timeout")
            if self.age_s > limits.max_call_s:
                self.send_event(ev.Error(code="max_duration", message="call time limit"))
                return await self.close("max_duration")
            idle = now - self._last_audio if self.state == "active" else 0.0
            if idle > limits.idle_timeout_s:
                return await self.close("idle_timeout")
            warn_before = min(15.0, limits.idle_timeout_s / 3)
            if idle > limits.idle_timeout_s - warn_before and not self._idle_warned:
                self._idle_warned = True
                self.send_event(ev.IdleWarning(
                    seconds_left=round(limits.idle_timeout_s - idle, 1)))
            full = self._send_full_since
            if full is not None and now - full > limits.send_stall_s:
                return await self.close("send_buffer_full")

    def _heard_from_peer(self, now: float) -> float:
        """When a packet (RTP, RTCP, data channel) last came from the peer.

        aiortc has no 'disconnected' state: a peer that vanishes without closing (crash,
        network loss) only fails ICE consent after ~30 s. A live peer sends RTCP every
        0.5-1.5 s (aiortc) even when it sends no audio, so silence means it is gone.
        """
        pc = self.pc
        transports = [t.receiver.transport for t in pc.getTransceivers()]
        if pc.sctp is not None:
            transports.append(pc.sctp.transport)
        received = 0
        for transport in {id(t): t for t in transports if t is not None}.values():
            for stats in transport._get_stats().values():
                received += getattr(stats, "packetsReceived", 0)
        if received != self._packets_in:
            self._packets_in, self._packets_at = received, now
        return self._packets_at

    # ---- events ----------------------------------------------------------------------------

    def send_event(self, event: ev.Event) -> None:
        if self.bot_video is not None:
            show_event(self.bot_video.board, event)
        if self._on_event is not None:
            self._on_event(self, event)
        for listener in list(self.listeners):
            listener(event)
        if self.protocol is not None:
            self.protocol.on_event(event)  # it sends what its protocol says, via send_raw
            return
        self.send_raw(json.dumps(event.to_wire(self.age_s * 1000), separators=(",", ":")))

    def send_raw(self, message: str) -> None:
        """One message on the data channel (kept until the channel opens, bounded)."""
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            self._send(channel, message)
        elif len(self._unsent) < 256:  # before the channel opens; bounded
            self._unsent.append(message)

    def _send(self, channel: RTCDataChannel, message: str) -> None:
        """Send, or drop: past the send-buffer bound (a peer that stops reading), or a message
        over the peer's `max-message-size`. Never raises: a lost event must not end the call."""
        bound = self.config.limits.max_send_buffer_bytes
        if channel.bufferedAmount + len(message) > bound:
            self.events_dropped += 1
            if self._send_full_since is None:
                self._send_full_since = time.monotonic()
                log.warning("call %s: the peer is not reading its data channel (%d bytes "
                            "unsent): dropping events", self.id, channel.bufferedAmount)
            return
        self._send_full_since = None
        try:
            channel.send(message)
        except Exception as exc:  # e.g. over the max-message-size the offer announced
            self.events_dropped += 1
            log.debug("call %s: event dropped: %s", self.id, exc)

    def _flush_events(self) -> None:
        channel = self._channel
        if channel is None:
            return
        for message in self._unsent:
            self._send(channel, message)
        self._unsent.clear()

    def _on_message(self, message: str | bytes) -> None:
        """A message from the caller; whatever it is, the call goes on."""
        try:
            self._handle_message(message)
        except Exception:  # a bug must cost one message, not the call
            log.exception("call %s: data-channel message failed", self.id)
            self._client_error("bad_message", "the message could not be handled")

    def _rate_limited(self, what: str) -> None:
        now = time.monotonic()
        if now - self._limit_error_at >= 1.0:  # one error a second, not one per message
            self._limit_error_at = now
            self._client_error("rate_limited", f"too many {what}; slow down")

    def _handle_message(self, message: str | bytes) -> None:
        limits = self.config.limits
        if not self._messages_in.take():
            return self._rate_limited("messages")
        if isinstance(message, bytes) or len(message) > limits.max_event_bytes:
            return self._client_error("bad_message", "messages are JSON text of at most "
                                      f"{limits.max_event_bytes} bytes")
        try:
            data = safejson.loads(message, max_depth=4)
        except safejson.InvalidJson as exc:
            return self._client_error("bad_message", f"message is not valid JSON ({exc})")
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return self._client_error("bad_message", "message needs a string 'type'")
        kind = data["type"]
        if kind == ev.InputText.type:
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                return self._client_error("bad_message", "input.text needs a non-empty 'text'")
            if len(text) > limits.max_text_chars:
                return self._client_error("bad_message", "input.text is too long")
            look = data.get("look", False)
            if not isinstance(look, bool):
                return self._client_error("bad_message", "input.text 'look' must be a boolean")
            if not self._typed_turns.take():
                return self._rate_limited("typed turns")
            self._mark_active()  # a typed turn is activity (text-only calls)
            self.session.submit_text(text, look=look)
        elif kind == ev.ResponseCancel.type:
            self.session.cancel_response()
        else:
            self._client_error("unknown_type", f"unknown message type {kind[:40]!r}")

    def _client_error(self, code: str, message: str) -> None:
        self.send_event(ev.Error(code=code, message=message))

    # ---- tear-down ---------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"call-{self.id[:8]}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a crash inside this call ends this call only
            log.error("call %s: task %s crashed", self.id, task.get_name(), exc_info=exc)
            self.send_event(ev.Error(code="internal", message="the call failed"))
            asyncio.ensure_future(self.close("crashed"))

    async def close(self, reason: str) -> None:
        """Idempotent; concurrent callers all wait for the one tear-down."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason))
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        self.close_reason = reason
        self.state = "closing"
        log.info("call %s closing: %s", self.id, reason)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await self.session.close()
        self.output.stop()
        if self.bot_video is not None:
            self.bot_video.stop()
        try:
            await asyncio.wait_for(self.pc.close(), timeout=5)
        except Exception:
            log.exception("call %s: closing the peer connection failed", self.id)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._unsent.clear()
        self.listeners.clear()
        self.video.clear()
        self.state = "closed"
        self.closed.set()
        if self._on_closed is not None:
            result = self._on_closed(self)
            if result is not None:
                await result
