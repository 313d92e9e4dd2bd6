"""The OpenAI Realtime protocol on top of one callbot `VoiceSession`.

Server side: callbot's typed events (`pipeline/events.py`) become the protocol's events
(`input_audio_buffer.*`, `conversation.item.*`, `response.*`, `output_audio_buffer.*`).
Client side: the protocol's client events become calls on the session (`submit_text`,
`submit_audio`, `cancel_response`, `set_system_prompt`...). The turn-taking is the session's:
nothing here decides when the caller has finished or what the bot says.

Function calls: the tools a client declares are offered to the LLM; when it calls one, the call
is sent to the client (`response.output_item.added` function_call,
`response.function_call_arguments.delta/done`, `response.done`) and the reply goes on, in a new
response, once the client has sent the `function_call_output` item and `response.create`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callbot.pipeline import events as ev
from callbot.pipeline.audio import FRAME_MS
from callbot.pipeline.llm.tools import Tool
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.settings import TurnSettings
from callbot.signalling import safejson
from callbot.signalling.calls.channel_limits import TokenBucket
from callbot.signalling.config import Limits
from callbot.signalling.protocols.openai_realtime.audio import (
    BadAudio,
    InputConverter,
    StreamingOutput,
    decode_pcm16,
    encode_pcm16,
)
from callbot.signalling.protocols.openai_realtime.session_config import (
    RealtimeSessionConfig,
    SessionError,
    apply_update,
    turn_settings,
)

log = logging.getLogger(__name__)

LABEL = "oai-events"
CLIENT_TOOL_TIMEOUT_S = 60.0  # how long a reply waits for the client's function_call_output
MAX_PTT_SECONDS = 60  # push-to-talk audio kept before a commit
MAX_ITEMS = 1000  # conversation items kept (the oldest go first)
MAX_EVENT_DEPTH = 16  # nesting of a client event (tools with nested parameter schemas)


def new_id(prefix: str) -> str:
    """An id in the reference API's style: `event_...`, `item_...`, `resp_...`."""
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass
class _Response:
    id: str
    turn_id: int | None
    audio: bool  # output modality when it started
    output: list[dict[str, Any]] = field(default_factory=list)
    message: dict[str, Any] | None = None  # the assistant message item, while open
    text: str = ""
    audio_started_at: float | None = None
    audio_ms: float = 0.0  # audio sent (WebSocket)
    done: bool = False


class RealtimeProtocol:
    """One Realtime connection (a WebRTC data channel or a WebSocket) on one VoiceSession."""

    label = LABEL

    def __init__(
        self,
        session: VoiceSession,
        send: Callable[[str], None],
        *,
        config: RealtimeSessionConfig,
        base_settings: TurnSettings,
        voices: tuple[str, ...],
        transcription_model: str,
        transport: str,  # "webrtc" | "websocket"
        max_message_bytes: int,
        max_prompt_chars: int,
        output: StreamingOutput | None = None,
        instructions_allowed: bool = True,
        limits: Limits | None = None,
    ) -> None:
        self.session = session
        # The client system-prompt policy (auth.client_system_prompt) holds for the whole
        # session: `instructions` in session.update and system messages are refused without it.
        self._instructions_allowed = instructions_allowed
        self._limits = limits or Limits()
        self._typed_turns = TokenBucket(self._limits.typed_turns_per_minute / 60,
                                        self._limits.typed_turn_burst)
        self._send_raw = send
        self.config = config
        self._base = base_settings
        self._voices = voices
        self._transcription_model = transcription_model
        self.transport = transport
        self._max_bytes = max_message_bytes
        self._max_prompt = max_prompt_chars
        self.output = output
        self.session_id = new_id("sess")
        self.conversation_id = new_id("conv")
        self._items: dict[str, dict[str, Any]] = {}  # the conversation, in order
        self._responses: dict[int, _Response] = {}  # by callbot turn id
        self._speaking: _Response | None = None  # the response whose audio is going out
        self._input_item: str | None = None  # the user audio item being spoken
        self._turn_items: dict[int, str] = {}  # callbot turn id -> user item id
        self._current_turn: int | None = None  # the turn being answered
        self._pending_audio_item: str | None = None  # committed, awaiting its transcript
        self._audio_ms_of: dict[str, float] = {}  # assistant item id -> audio sent (ms)
        self._partial = ""
        self._text_turn = False  # the next transcript is a typed turn (already an item)
        self._pending_texts: list[tuple[str, str]] = []  # (item id, text) awaiting response.create
        self._ptt_audio: list[np.ndarray] = []  # push-to-talk audio not yet committed
        self._committed_audio: list[tuple[str, np.ndarray]] = []  # awaiting response.create
        self._tool_waits: dict[str, asyncio.Future[str]] = {}  # call id -> its output
        self._tool_outputs: dict[str, str] = {}  # outputs sent, awaiting response.create
        self._converter = InputConverter(config.input_rate)
        self._audio_ms = 0  # input audio received, ms
        # where audio from `input_audio_buffer.append` goes: the call (`Call.caller_audio`,
        # set by the assembly) so it is counted and recorded like a WebRTC track's; it feeds
        # this protocol back
        self.audio_in: Callable[[np.ndarray], None] = self.feed
        self._apply(config, initial=True)

    # ---- start ------------------------------------------------------------------------------

    def start(self) -> None:
        self._send("session.created", session=self._session_wire())

    def _session_wire(self) -> dict[str, Any]:
        return self.config.to_wire(self.session_id, self._transcription_model)

    def _apply(self, config: RealtimeSessionConfig, *, initial: bool = False) -> None:
        old = self.config
        self.config = config
        s = self.session
        if initial or config.instructions != old.instructions:
            s.set_system_prompt(config.instructions)
        s.set_voice(config.voice)
        s.speak_replies = config.audio_out
        s.update_settings(turn_settings(self._base, config.turn_detection,
                                        config.max_output_tokens))
        s.set_tools([] if config.tool_choice == "none" else
                    [self._client_tool(t) for t in config.tools])
        if config.tools and not s.tools:
            log.warning("the LLM cannot call tools: the session's tools are not offered")
        if initial or config.input_rate != old.input_rate:
            self._converter = InputConverter(config.input_rate)
        if self.output is not None:
            self.output.rate = config.output_rate
        if config.push_to_talk and not old.push_to_talk:
            self._ptt_audio.clear()

    # ---- sending ----------------------------------------------------------------------------

    def _send(self, kind: str, **fields: Any) -> None:
        message = {"type": kind, "event_id": new_id("event"), **fields}
        try:
            self._send_raw(json.dumps(message, separators=(",", ":")))
        except Exception:  # a closed transport: the call is ending
            log.debug("could not send %s", kind, exc_info=True)

    def _error(self, code: str, message: str, *, kind: str = "invalid_request_error",
               param: str | None = None, event_id: str | None = None) -> None:
        self._send("error", error={"type": kind, "code": code, "message": message,
                                   "param": param, "event_id": event_id})

    def _add_item(self, item: dict[str, Any], *, done: bool) -> None:
        previous = next(reversed(self._items), None) if self._items else None
        self._items[item["id"]] = item
        while len(self._items) > MAX_ITEMS:  # memory stays bounded over a long session
            self._items.pop(next(iter(self._items)))
        self._send("conversation.item.added", previous_item_id=previous, item=item)
        if done:
            self._send("conversation.item.done", previous_item_id=previous, item=item)

    def _previous_of(self, item_id: str) -> str | None:
        previous = None
        for key in self._items:
            if key == item_id:
                return previous
            previous = key
        return previous

    # ---- callbot events -> protocol events ----------------------------------------------------

    def on_event(self, event: ev.Event) -> None:
        match event:
            case ev.SpeechStarted():
                self._input_item = new_id("item")
                self._partial = ""
                start = max(0, self._audio_ms - self._base.endpointing.segmenter.preroll_ms)
                self._send("input_audio_buffer.speech_started", audio_start_ms=start,
                           item_id=self._input_item)
            case ev.SpeechStopped():
                item_id = self._input_item or new_id("item")
                self._input_item = None
                self._send("input_audio_buffer.speech_stopped", audio_end_ms=self._audio_ms,
                           item_id=item_id)
                self._commit_audio_item(item_id)
                self._pending_audio_item = item_id
            case ev.TranscriptPartial(text=text):
                speaking = self._input_item
                if speaking is not None and text.startswith(self._partial):
                    delta, self._partial = text[len(self._partial):], text
                    if delta:
                        self._send("conversation.item.input_audio_transcription.delta",
                                   item_id=speaking, content_index=0, delta=delta)
            case ev.TranscriptFinal(text=text, turn_id=turn_id):
                self._current_turn = turn_id
                if self._text_turn:
                    self._text_turn = False
                    return
                item_id = self._pending_audio_item or new_id("item")
                self._pending_audio_item = None
                self._turn_items[turn_id] = item_id
                item = self._items.get(item_id)
                if item is None:
                    self._commit_audio_item(item_id)
                    item = self._items[item_id]
                item["content"][0]["transcript"] = text
                self._send("conversation.item.input_audio_transcription.completed",
                           item_id=item_id, content_index=0, transcript=text,
                           usage={"type": "duration", "seconds": 0})
                self._send("conversation.item.done", previous_item_id=self._previous_of(item_id),
                           item=item)
            case ev.ResponseTextDelta(delta=delta, turn_id=turn_id):
                self._text_delta(self._open_response(turn_id), delta)
            case ev.ResponseAudioStarted(turn_id=turn_id):
                started = self._open_response(turn_id)
                started.audio_started_at = time.monotonic()
                self._speaking = started
                if self.transport == "webrtc":
                    self._send("output_audio_buffer.started", response_id=started.id)
            case ev.ResponseAudioDone(turn_id=turn_id):
                played = self._responses.get(turn_id)
                if played is not None and self.transport == "webrtc":
                    self._send("output_audio_buffer.stopped", response_id=played.id)
            case ev.TurnMetrics(turn_id=turn_id):
                answered = self._responses.get(turn_id)
                if answered is not None:
                    self._finish(answered, "completed")
            case ev.ResponseInterrupted(turn_id=turn_id, reason=reason, spoken_text=spoken):
                self._interrupted(turn_id, reason, spoken)
            case ev.SafetyFlagged(source=source, categories=categories, action=action):
                # callbot's extension event: the Realtime protocol has no moderation event
                self._send("safety.flagged", source=source, categories=list(categories),
                           action=action)
            case ev.Error(code=code, message=message):
                kind = "invalid_request_error" if code in ("bad_message", "unknown_type") \
                    else "server_error"
                self._error(code, message, kind=kind)
                if self._current_turn is not None and code.startswith(("llm_", "pipeline_")):
                    failed = self._responses.get(self._current_turn)
                    if failed is not None:
                        self._finish(failed, "failed",
                                     {"type": "failed", "error": {"code": code,
                                                                  "message": message}})
            case _:
                pass  # bot.state, transcript previews without an item: nothing to say

    def _commit_audio_item(self, item_id: str) -> None:
        self._send("input_audio_buffer.committed",
                   previous_item_id=next(reversed(self._items), None) if self._items else None,
                   item_id=item_id)
        self._add_item({"id": item_id, "object": "realtime.item", "type": "message",
                        "status": "completed", "role": "user",
                        "content": [{"type": "input_audio", "transcript": None}]}, done=False)

    def _open_response(self, turn_id: int | None) -> _Response:
        if turn_id is not None and turn_id in self._responses:
            return self._responses[turn_id]
        response = _Response(id=new_id("resp"), turn_id=turn_id, audio=self.config.audio_out)
        if turn_id is not None:
            self._responses[turn_id] = response
        self._send("response.created", response=self._response_wire(response, "in_progress"))
        return response

    def _response_wire(self, response: _Response, status: str,
                       details: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "object": "realtime.response", "id": response.id, "status": status,
            "status_details": details, "output": list(response.output),
            "conversation_id": self.conversation_id,
            "output_modalities": ["audio"] if response.audio else ["text"],
            "max_output_tokens": self.config.max_output_tokens,
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": self.config.output_rate},
                                 "voice": self.config.voice}},
            "usage": None if status == "in_progress" else {
                "total_tokens": 0, "input_tokens": 0, "output_tokens": 0},
            "metadata": None,
        }

    def _message(self, response: _Response) -> dict[str, Any]:
        if response.message is None:
            part: dict[str, Any] = ({"type": "output_audio", "transcript": ""} if response.audio
                                    else {"type": "output_text", "text": ""})
            item = {"id": new_id("item"), "object": "realtime.item", "type": "message",
                    "status": "in_progress", "role": "assistant", "content": [part]}
            response.message = item
            response.text = ""
            self._send("response.output_item.added", response_id=response.id,
                       output_index=len(response.output), item=item)
            self._add_item(item, done=False)
            self._send("response.content_part.added", response_id=response.id,
                       item_id=item["id"], output_index=len(response.output), content_index=0,
                       part={"type": "audio", "transcript": ""} if response.audio
                       else {"type": "text", "text": ""})
        return response.message

    def _text_delta(self, response: _Response, delta: str) -> None:
        item = self._message(response)
        response.text += delta
        kind = ("response.output_audio_transcript.delta" if response.audio
                else "response.output_text.delta")
        self._send(kind, response_id=response.id, item_id=item["id"],
                   output_index=len(response.output), content_index=0, delta=delta)

    def send_audio(self, pcm: np.ndarray) -> None:
        """The WebSocket output's audio, as deltas of the response being spoken."""
        response = self._speaking
        if response is None or response.done:
            response = self._responses.get(self._current_turn or -1)
        if response is None or response.done:
            return
        item = self._message(response)
        response.audio_ms += 1000 * pcm.size / self.config.output_rate
        self._send("response.output_audio.delta", response_id=response.id, item_id=item["id"],
                   output_index=len(response.output), content_index=0,
                   delta=encode_pcm16(pcm))

    def _close_message(self, response: _Response, text: str,
                       status: str = "completed") -> None:
        item = response.message
        if item is None:
            return
        response.message = None
        index = len(response.output)
        common = {"response_id": response.id, "item_id": item["id"], "output_index": index,
                  "content_index": 0}
        if response.audio:
            item["content"][0]["transcript"] = text
            if self.transport == "websocket":
                self._send("response.output_audio.done", **common)
            self._send("response.output_audio_transcript.done", transcript=text, **common)
            self._send("response.content_part.done", part={"type": "audio", "transcript": text},
                       **common)
        else:
            item["content"][0]["text"] = text
            self._send("response.output_text.done", text=text, **common)
            self._send("response.content_part.done", part={"type": "text", "text": text},
                       **common)
        item["status"] = status
        if response.audio_ms:
            self._audio_ms_of[item["id"]] = response.audio_ms
        self._send("response.output_item.done", response_id=response.id, output_index=index,
                   item=item)
        self._send("conversation.item.done", previous_item_id=self._previous_of(item["id"]),
                   item=item)
        response.output.append(item)

    def _finish(self, response: _Response, status: str,
                details: dict[str, Any] | None = None, text: str | None = None) -> None:
        if response.done:
            return
        self._close_message(response, response.text.strip() if text is None else text,
                            "completed" if status == "completed" else "incomplete")
        response.done = True
        if response.turn_id is not None and self._responses.get(response.turn_id) is response:
            del self._responses[response.turn_id]
        if self._speaking is response:
            self._speaking = None
        self._send("response.done", response=self._response_wire(response, status, details))

    def _interrupted(self, turn_id: int, reason: str, spoken: str) -> None:
        response = self._responses.get(turn_id)
        if response is None:
            return
        heard_ms = 0
        if response.audio_started_at is not None:
            heard_ms = int((time.monotonic() - response.audio_started_at) * 1000)
            if self.transport == "webrtc":
                self._send("output_audio_buffer.cleared", response_id=response.id)
        item = response.message
        if item is not None and response.audio:
            self._send("conversation.item.truncated", item_id=item["id"], content_index=0,
                       audio_end_ms=heard_ms)
        why = "turn_detected" if reason == "barge_in" else "client_cancelled"
        self._finish(response, "cancelled", {"type": "cancelled", "reason": why}, text=spoken)

    # ---- client tools -------------------------------------------------------------------------

    def _client_tool(self, spec: dict[str, Any]) -> Tool:
        name = spec["name"]
        choice = self.config.tool_choice
        required = choice == "required" or (isinstance(choice, dict) and choice["name"] == name)

        async def call(**arguments: Any) -> str:
            return await self._call_client(name, json.dumps(arguments))

        return Tool(name, spec["description"], spec["parameters"], call,
                    timeout_s=CLIENT_TOOL_TIMEOUT_S, required=required)

    async def _call_client(self, name: str, arguments: str) -> str:
        """Hand one function call to the client; its `function_call_output` is the result."""
        response = self._open_response(self._current_turn)
        self._close_message(response, response.text.strip())
        item_id, call_id = new_id("item"), new_id("call")
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "function_call",
                                "status": "in_progress", "name": name, "call_id": call_id,
                                "arguments": ""}
        index = len(response.output)
        self._send("response.output_item.added", response_id=response.id, output_index=index,
                   item=item)
        self._add_item(item, done=False)
        common = {"response_id": response.id, "item_id": item_id, "output_index": index,
                  "call_id": call_id}
        self._send("response.function_call_arguments.delta", delta=arguments, **common)
        self._send("response.function_call_arguments.done", arguments=arguments, name=name,
                   **common)
        item["arguments"], item["status"] = arguments, "completed"
        self._send("response.output_item.done", response_id=response.id, output_index=index,
                   item=item)
        self._send("conversation.item.done", previous_item_id=self._previous_of(item_id),
                   item=item)
        response.output.append(item)
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tool_waits[call_id] = waiter
        self._finish(response, "completed")
        try:
            return await waiter
        finally:
            self._tool_waits.pop(call_id, None)
            self._tool_outputs.pop(call_id, None)

    # ---- caller audio ---------------------------------------------------------------------------

    def feed(self, frame: np.ndarray) -> None:
        """20 ms of the caller's audio, 16 kHz (from the WebRTC track or the WebSocket)."""
        self._audio_ms += FRAME_MS
        if self.config.push_to_talk:
            if sum(len(a) for a in self._ptt_audio) < MAX_PTT_SECONDS * 16_000:
                self._ptt_audio.append(frame)
        else:
            self.session.feed(frame)

    # ---- client events -> session ---------------------------------------------------------------

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes) or len(message) > self._max_bytes:
            return self._error("invalid_event", "events are JSON text of at most "
                               f"{self._max_bytes} bytes")
        try:
            data = safejson.loads(message, max_depth=MAX_EVENT_DEPTH)
        except safejson.InvalidJson as exc:
            return self._error("invalid_json", f"the event is not valid JSON ({exc})")
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return self._error("invalid_event", "an event needs a string 'type'")
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        handler = self._handlers().get(data["type"])
        if handler is None:
            return self._error("unknown_event", f"unknown event type {data['type'][:60]!r}",
                               event_id=event_id)
        try:
            handler(data)
        except SessionError as exc:
            self._error("invalid_value", str(exc), param=exc.param, event_id=event_id)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._error("invalid_event", f"malformed {data['type']}: {exc}", event_id=event_id)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        return {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear_input,
            "conversation.item.create": self._item_create,
            "conversation.item.delete": self._item_delete,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.retrieve": self._item_retrieve,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "output_audio_buffer.clear": self._output_clear,
        }

    def _session_update(self, data: dict[str, Any]) -> None:
        session = data.get("session")
        if (not self._instructions_allowed and isinstance(session, dict)
                and session.get("instructions") is not None):
            return self._error("prompt_not_allowed", "this server does not let clients set "
                               "'instructions' (auth.client_system_prompt)",
                               param="session.instructions")
        config = apply_update(self.config, data.get("session"), voices=self._voices,
                              base=self._base, max_prompt_chars=self._max_prompt)
        self._apply(config)
        self._send("session.updated", session=self._session_wire())

    def _append(self, data: dict[str, Any]) -> None:
        audio = data.get("audio")
        if not isinstance(audio, str):
            raise ValueError("'audio' must be a base64 string")
        if self.transport == "webrtc":
            raise ValueError("on WebRTC the audio comes from the media track")
        try:
            pcm = decode_pcm16(audio)
        except BadAudio as exc:
            raise ValueError(str(exc)) from None
        for frame in self._converter.push(pcm):
            self.audio_in(frame)

    def _commit(self, data: dict[str, Any]) -> None:
        if not self.config.push_to_talk:
            raise ValueError("with turn detection on, callbot commits the input itself")
        if not self._ptt_audio:
            return self._error("input_audio_buffer_commit_empty",
                               "the input audio buffer is empty")
        pcm = np.concatenate(self._ptt_audio)
        self._ptt_audio.clear()
        item_id = new_id("item")
        self._commit_audio_item(item_id)
        self._committed_audio.append((item_id, pcm))

    def _clear_input(self, data: dict[str, Any]) -> None:
        self._ptt_audio.clear()
        self._send("input_audio_buffer.cleared")

    def _item_create(self, data: dict[str, Any]) -> None:
        item = data.get("item")
        if not isinstance(item, dict):
            raise ValueError("'item' must be an object")
        kind = item.get("type", "message")
        given = item.get("id")
        item_id = given if isinstance(given, str) and given else new_id("item")
        if kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not isinstance(output, str):
                raise ValueError("a function_call_output needs 'call_id' and 'output' strings")
            if call_id not in self._tool_waits:
                raise ValueError(f"no function call {call_id[:60]!r} is waiting for output")
            self._tool_outputs[call_id] = output
            self._add_item({"id": item_id, "object": "realtime.item",
                            "type": "function_call_output", "call_id": call_id,
                            "output": output, "status": "completed"}, done=True)
            return
        if kind != "message":
            raise ValueError(f"item type {str(kind)[:40]!r} is not supported")
        role = item.get("role")
        texts = [c.get("text") for c in item.get("content") or []
                 if isinstance(c, dict) and c.get("type") in ("input_text", "text",
                                                               "output_text")]
        text = " ".join(t for t in texts if isinstance(t, str)).strip()
        if role not in ("user", "system", "assistant") or not text:
            raise ValueError("a message needs a role (user, system, assistant) and text content")
        if len(text) > self._limits.max_text_chars:
            raise ValueError(f"a message's text is over {self._limits.max_text_chars} characters")
        if role == "system" and not self._instructions_allowed:
            return self._error("prompt_not_allowed", "this server does not let clients add "
                               "system messages (auth.client_system_prompt)", param="item.role")
        content_type = "output_text" if role == "assistant" else "input_text"
        stored = {"id": item_id, "object": "realtime.item", "type": "message",
                  "status": "completed", "role": role,
                  "content": [{"type": content_type, "text": text}]}
        if role == "user":
            self._pending_texts.append((item_id, text))
        elif role == "system":  # only when this client may instruct the bot (above)
            self.session.add_context(text, trusted=True)
        else:
            self.session.history.append({"role": "assistant", "content": text})
        self._add_item(stored, done=True)

    def _item_delete(self, data: dict[str, Any]) -> None:
        item_id = data["item_id"]
        item = self._items.pop(item_id, None) if isinstance(item_id, str) else None
        if item is None:
            raise ValueError(f"no item {str(item_id)[:60]!r}")
        self._pending_texts = [(i, t) for i, t in self._pending_texts if i != item_id]
        text = _item_text(item)
        for i in range(len(self.session.history) - 1, 0, -1):
            message = self.session.history[i]
            if message["role"] == item.get("role") and message["content"] == text:
                del self.session.history[i]
                break
        self._send("conversation.item.deleted", item_id=item_id)

    def _item_truncate(self, data: dict[str, Any]) -> None:
        item_id, end_ms = data["item_id"], data["audio_end_ms"]
        item = self._items.get(item_id) if isinstance(item_id, str) else None
        if item is None or item.get("role") != "assistant":
            raise ValueError("only an assistant message can be truncated")
        if not isinstance(end_ms, int) or end_ms < 0:
            raise ValueError("'audio_end_ms' must be a non-negative integer")
        total_ms = self._audio_ms_of.get(item_id, 0.0)
        text = _item_text(item)
        if total_ms and end_ms < total_ms:
            words = text.split()
            kept = " ".join(words[: int(len(words) * end_ms / total_ms)])
            for message in reversed(self.session.history):
                if message["role"] == "assistant" and message["content"] == text:
                    message["content"] = kept
                    break
            item["content"][0]["transcript"] = kept
        self._send("conversation.item.truncated", item_id=item_id,
                   content_index=int(data.get("content_index", 0)), audio_end_ms=end_ms)

    def _item_retrieve(self, data: dict[str, Any]) -> None:
        item_id = data["item_id"]
        item = self._items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise ValueError(f"no item {str(item_id)[:60]!r}")
        self._send("conversation.item.retrieved", item=item)

    def _response_create(self, data: dict[str, Any]) -> None:
        ready = [c for c in self._tool_outputs if c in self._tool_waits]
        if ready:  # the reply waiting on these function calls goes on, as a new response
            if self._current_turn is not None:
                self._open_response(self._current_turn)
            for call_id in ready:
                waiter = self._tool_waits[call_id]
                if not waiter.done():
                    waiter.set_result(self._tool_outputs.pop(call_id))
            return
        if (self._pending_texts or self._committed_audio) and not self._typed_turns.take():
            return self._error("rate_limited", "too many responses requested; slow down")
        if self._pending_texts:
            text = "\n".join(t for _, t in self._pending_texts)
            self._pending_texts.clear()
            self._text_turn = True
            self.session.submit_text(text)
            return
        if self._committed_audio:
            pcm = np.concatenate([a for _, a in self._committed_audio])
            self._pending_audio_item = self._committed_audio[-1][0]
            self._committed_audio.clear()
            self.session.submit_audio(pcm)
            return
        self._error("nothing_to_answer", "response.create needs new input first (a user "
                    "message, committed audio or a function_call_output)")

    def _response_cancel(self, data: dict[str, Any]) -> None:
        self.session.cancel_response()

    def _output_clear(self, data: dict[str, Any]) -> None:
        self.session.cancel_response()

    def close(self) -> None:
        for waiter in self._tool_waits.values():
            waiter.cancel()


def _item_text(item: dict[str, Any]) -> str:
    for part in item.get("content") or []:
        for key in ("text", "transcript"):
            if isinstance(part.get(key), str):
                return str(part[key])
    return ""
