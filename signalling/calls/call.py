"""One live call, whatever carries it: its conversation, its events, its limits, its end.

A call owns everything it starts; `close()` releases all of it (tasks, transport, pipeline
work), whatever ended the call: hang-up, a dead peer, DELETE, a timeout, or a crash inside this
call. The transport (`CallTransport`: a WebRTC peer, a Realtime WebSocket, a phone line) only
moves audio and messages; what a call is — turn-taking, safety, knowledge, memory, hooks, the
idle timer — is the same for all of them and is assembled in one place (`assembly.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from callbot.pipeline import events as ev
from callbot.pipeline.calllog import CALL_ID
from callbot.pipeline.echo import EchoCanceller
from callbot.pipeline.lang import CallLanguage
from callbot.pipeline.llm.tools import Tool
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.turn import AudioOutput
from callbot.pipeline.vision import VisionSource
from callbot.signalling import safejson
from callbot.signalling.calls.channel_limits import TokenBucket
from callbot.signalling.config import Limits

if TYPE_CHECKING:
    from callbot.pipeline.augment import ContextSource
    from callbot.pipeline.knowledge.source import PassageProvider

log = logging.getLogger(__name__)

EVENTS_LABEL = "events"


class EventProtocol(Protocol):
    """A wire protocol over the call's events (e.g. the OpenAI Realtime events): it gets the
    session's events and the peer's messages, and may take the caller's audio first
    (push-to-talk). Without one, the call speaks callbot's own events."""

    label: str  # the data channel it speaks on (WebRTC)
    # where audio the protocol itself carries (a WebSocket's appends) goes: the assembly
    # sets `Call.caller_audio`, so every transport's caller audio passes through the call
    audio_in: Callable[[np.ndarray], None]

    def on_event(self, event: ev.Event) -> None: ...

    def on_message(self, message: str | bytes) -> None: ...

    def feed(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


class CallTransport(Protocol):
    """What carries one call: audio both ways and messages both ways. It calls back
    `Call.caller_audio`, `Call.peer_message`, `Call.transport_state` and `Call.transport_lost`."""

    kind: str  # "webrtc" | "websocket" | "sip": listed with the call

    @property
    def output(self) -> AudioOutput:
        """Where the bot's voice goes, paced for the caller."""
        ...

    def bind(self, call: Call) -> None:
        """Start delivering the caller's audio and messages to `call`."""
        ...

    def send(self, message: str) -> None:
        """One message to the peer (an event); dropped, never raised, if it cannot go."""
        ...

    def last_heard(self, now: float) -> float | None:
        """When a packet last came from the peer; None: the transport notices a dead peer
        itself (and calls `transport_lost`)."""
        ...

    def send_stalled_since(self) -> float | None:
        """Since when the peer has not been reading what is sent to it (None: it reads)."""
        ...

    def describe(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


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
    """Built by `assembly.assemble_call`; the transport is attached there too."""

    def __init__(
        self,
        limits: Limits,
        transport: CallTransport,
        options: CallOptions,
        *,
        language: CallLanguage,
        caller_id: str | None = None,  # set only when this call's caller is remembered
        on_closed: Callable[[Call], Awaitable[None] | None] | None = None,
        on_event: Callable[[Call, ev.Event], None] | None = None,
        call_id: str | None = None,
    ) -> None:
        self.id = call_id or uuid.uuid4().hex
        self.limits = limits
        self.transport = transport
        self.options = options
        # The caller's audio passes this first (the echo canceller, set by assembly), if any.
        self.audio_filter: Callable[[np.ndarray], np.ndarray] | None = None
        self.echo_canceller: EchoCanceller | None = None
        self.language = language
        self.caller_id = caller_id
        self.started_at = time.monotonic()
        self.created_wall = time.time()
        self.state = "new"  # new | connecting | active | closing | closed
        self.close_reason: str | None = None
        self._on_closed = on_closed
        self._on_event = on_event
        self.session: VoiceSession  # set by the assembly, before the call starts
        self.protocol: EventProtocol | None = None  # None: callbot's own events
        self.vision: VisionSource | None = None  # what the caller's camera adds (None: no sight)
        self.listeners: list[Callable[[ev.Event], None]] = []  # CallHandle subscribers
        self.event_observers: list[Callable[[ev.Event], None]] = []  # the bot's video, ...
        self.audio_taps: list[Callable[[np.ndarray], None]] = []  # the caller's audio: records
        self._messages_in = TokenBucket(limits.channel_messages_per_s, limits.channel_burst)
        self._typed_turns = TokenBucket(limits.typed_turns_per_minute / 60,
                                        limits.typed_turn_burst)
        self._limit_error_at = -1e9  # when the last rate_limited error event went out
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_activity = time.monotonic()  # the caller spoke or typed, or the bot worked
        self._idle_warned = False
        self._closing: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.audio_frames_in = 0

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def output(self) -> AudioOutput:
        return self.transport.output

    def describe(self) -> dict[str, Any]:
        return {
            "call_id": self.id,
            "transport": self.transport.kind,
            "state": self.state,
            "bot_state": self.session.state,
            "language": self.language.current,
            "age_s": round(self.age_s, 1),
            "audio_frames_in": self.audio_frames_in,
            "audio_frames_out": getattr(self.output, "frames_sent", 0),
            **self.transport.describe(),
        }

    # ---- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """The transport is attached: audio and messages flow, the watchdog runs."""
        CALL_ID.set(self.id)  # tasks started from here on (media, events, hooks) log with it
        if self.state == "new":
            self.state = "connecting"
        self.transport.bind(self)
        self._spawn(self._watchdog(), "watchdog")

    def transport_state(self, state: str) -> None:
        """The transport connected ("active")."""
        if self.state in ("new", "connecting") and state == "active":
            self.state = "active"
            self._mark_active()

    def transport_lost(self, reason: str) -> None:
        """The peer is gone (ICE failed, the socket closed): end the call."""
        self.spawn_close(reason)

    def spawn_close(self, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason))

    # ---- inputs ---------------------------------------------------------------------------

    def caller_audio(self, frame: np.ndarray) -> None:
        """One 20 ms frame of the caller's audio, 16 kHz mono int16."""
        self.audio_frames_in += 1
        if self.audio_filter is not None:
            frame = self.audio_filter(frame)
        for tap in self.audio_taps:
            tap(frame)
        if self.protocol is not None:
            self.protocol.feed(frame)
        else:
            self.session.feed(frame)
        if self.session.hearing_speech:  # silence (a muted microphone) is not activity
            self._mark_active()

    def peer_message(self, message: str | bytes) -> None:
        """A message from the peer; whatever it is, the call goes on."""
        try:
            if self.protocol is not None:
                self.protocol.on_message(message)  # its turns make the bot think: activity
            else:
                self._handle_message(message)
        except Exception:  # a bug must cost one message, not the call
            log.exception("call %s: message failed", self.id)
            self._client_error("bad_message", "the message could not be handled")

    def _mark_active(self) -> None:
        self._last_activity = time.monotonic()
        self._idle_warned = False

    # ---- events ---------------------------------------------------------------------------

    def send_event(self, event: ev.Event) -> None:
        for observer in self.event_observers:
            observer(event)
        if self._on_event is not None:
            self._on_event(self, event)
        for listener in list(self.listeners):
            listener(event)
        if self.protocol is not None:
            self.protocol.on_event(event)  # it sends what its protocol says, via send_raw
            return
        self.send_raw(json.dumps(event.to_wire(self.age_s * 1000), separators=(",", ":")))

    def send_raw(self, message: str) -> None:
        self.transport.send(message)

    def _rate_limited(self, what: str) -> None:
        now = time.monotonic()
        if now - self._limit_error_at >= 1.0:  # one error a second, not one per message
            self._limit_error_at = now
            self._client_error("rate_limited", f"too many {what}; slow down")

    def _handle_message(self, message: str | bytes) -> None:
        """callbot's own client events: `input.text`, `response.cancel`."""
        limits = self.limits
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

    # ---- the limits every call has ----------------------------------------------------------

    async def _watchdog(self) -> None:
        """Ends calls that never connect, go quiet, drop off, or run too long."""
        limits = self.limits
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            last_heard = self.transport.last_heard(now)
            if (self.state == "active" and last_heard is not None
                    and now - last_heard > limits.disconnect_grace_s):
                return await self.close("disconnected")
            if self.state == "connecting" and self.age_s > limits.setup_timeout_s:
                return await self.close("setup_timeout")
            if self.age_s > limits.max_call_s:
                self.send_event(ev.Error(code="max_duration", message="call time limit"))
                return await self.close("max_duration")
            if self.session.state != "listening" or self.session.hearing_speech:
                self._mark_active()  # the idle timer never runs while the bot works
            idle = now - self._last_activity if self.state == "active" else 0.0
            if idle > limits.idle_timeout_s:
                return await self.close("idle_timeout")
            warn_before = min(15.0, limits.idle_timeout_s / 3)
            if idle > limits.idle_timeout_s - warn_before and not self._idle_warned:
                self._idle_warned = True
                self.send_event(ev.IdleWarning(
                    seconds_left=round(limits.idle_timeout_s - idle, 1)))
            stalled = self.transport.send_stalled_since()
            if stalled is not None and now - stalled > limits.send_stall_s:
                return await self.close("send_buffer_full")

    # ---- tear-down ------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        """A task this call owns: cancelled when it ends; its crash ends this call only."""
        self._spawn(coro, name)

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
            self.spawn_close("crashed")

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
        if self.protocol is not None:
            self.protocol.close()
        await self.session.close()
        try:
            await asyncio.wait_for(self.transport.close(), timeout=5)
        except Exception:
            log.exception("call %s: closing the transport failed", self.id)
        await asyncio.gather(*tasks, return_exceptions=True)
        self.listeners.clear()
        self.event_observers.clear()
        self.audio_taps.clear()
        self.state = "closed"
        self.closed.set()
        if self._on_closed is not None:
            try:
                result = self._on_closed(self)
                if result is not None:
                    await result
            except Exception:
                log.exception("call %s: clean-up after the call failed", self.id)
