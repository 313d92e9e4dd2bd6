"""The one place a conversation is built, whatever the transport and the protocol.

`assemble_call(services, options, transport, ...)` gives every call the same parts: the
per-call engines in its language, the safety guards, the knowledge base and the app's own
passages, the caller's memory, the camera (when the transport carries video), the tools, the
idle timer and the other limits (`Call`). The native WebRTC route, the OpenAI Realtime routes
and the phone line differ only in the transport they hand in and the protocol that translates
the events; none of them builds a `VoiceSession` of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from callbot.pipeline import events as ev
from callbot.pipeline.augment import ContextSource
from callbot.pipeline.echo import EchoCanceller
from callbot.pipeline.engines import Engines
from callbot.pipeline.lang import call_engines
from callbot.pipeline.memory import valid_caller_id
from callbot.pipeline.safety.guard import TurnGuard
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.vision import VisionEngine, VisionSource
from callbot.signalling.calls.call import Call, CallOptions, CallTransport, EventProtocol
from callbot.signalling.calls.sight import camera_frames
from callbot.signalling.config import CallbotConfig

if TYPE_CHECKING:
    from callbot.pipeline.knowledge import KnowledgeBase
    from callbot.rtc.tracks import LatestVideoFrame
    from callbot.signalling.calls.memory import MemoryService

log = logging.getLogger(__name__)

# The protocol spoken over a call (None: callbot's own events): made from the call's session
# and a function that sends one message to the peer.
ProtocolFactory = Callable[[VoiceSession, Callable[[str], None]], EventProtocol]


@dataclass(frozen=True)
class CallServices:
    """What every call of an app is built from: its shared engines and features."""

    config: CallbotConfig
    engines: Engines
    guard: TurnGuard | None  # safety: checks every caller turn and bot sentence
    vision: VisionEngine | None  # reads the caller's camera (None: vision off)
    knowledge: KnowledgeBase | None  # the server's documents (None: none configured)
    memory: MemoryService | None  # caller memory (None: off)
    languages: tuple[str, ...]  # what a call may be detected as
    language_voices: Mapping[str, str]  # the voice that speaks each language
    on_event: Callable[[Call, ev.Event], None]  # every event of every call (metrics, hooks)
    on_closed: Callable[[Call], Awaitable[None]]  # registry, store, hooks, memory


@dataclass(frozen=True)
class CallExtras:
    options: CallOptions  # with the knowledge instructions added to the system prompt
    sources: tuple[ContextSource, ...]
    caller_id: str | None  # set when this call's caller is remembered
    memory: str | None  # what is remembered of earlier calls
    prompt_suffix: str  # the server's part of the system prompt (how to use the documents)


async def assemble_call(services: CallServices, options: CallOptions,
                        transport: CallTransport, *, token_subject: str | None = None,
                        protocol: ProtocolFactory | None = None) -> Call:
    """A call with its conversation, on `transport`, started (audio and messages flow).

    `token_subject`: the `sub` of the signed call token that started it (the caller memory
    remembers them by it unless the options name the caller)."""
    extras = await call_extras(services, options, token_subject)
    options = extras.options
    config = services.config
    per_call, language = call_engines(
        services.engines, allowed=services.languages, language=options.language,
        voice=options.voice, voices_by_language=services.language_voices)
    call = Call(config.limits, transport, options, language=language,
                caller_id=extras.caller_id, on_closed=services.on_closed,
                on_event=services.on_event)
    sources: list[ContextSource] = []
    video: LatestVideoFrame | None = getattr(transport, "video", None)
    if services.vision is not None and video is not None:
        settings = config.vision
        call.vision = VisionSource(
            services.vision, functools.partial(camera_frames, video),
            timeout_s=settings.timeout_s, stale_s=settings.stale_s)
        sources.append(call.vision)
    call.session = VoiceSession(
        per_call,
        output=transport.output,
        emit=call.send_event,
        settings=config.turn,
        system_prompt=options.system_prompt,
        voice=options.voice,
        language=options.language,
        tools=options.tools,
        guards=[services.guard] if services.guard is not None else [],
        language_state=language,
        context_sources=sources + list(extras.sources),
    )
    on_sent = getattr(transport.output, "on_sent", None)
    if config.turn.echo.enabled and on_sent is not None:
        # The bot's voice back through a speakerphone, cancelled before VAD and ASR; the
        # reference is what the paced track actually sent (WebRTC only: it paces the output).
        canceller = EchoCanceller(stream_delay_ms=config.turn.echo.stream_delay_ms,
                                  adaptive=config.turn.echo.adaptive)
        on_sent.append(canceller.far)
        call.audio_filter = canceller.near
        call.echo_canceller = canceller
        call.session.echo_present = canceller.hears_echo
    call.session.prompt_suffix = extras.prompt_suffix
    if extras.memory:
        call.session.add_context(extras.memory)
    if protocol is not None:
        call.protocol = protocol(call.session, call.send_raw)
        call.protocol.audio_in = call.caller_audio  # counted, recorded, marks activity
    call.start()
    return call


async def call_extras(services: CallServices, options: CallOptions,
                      token_subject: str | None) -> CallExtras:
    """What a call adds to its conversation besides the caller's words: the server's
    knowledge base, the app's own passages and context sources, and the caller's memory."""
    from callbot.pipeline.knowledge.source import (
        KNOWLEDGE_INSTRUCTIONS,
        KnowledgeSource,
        ProvidedPassages,
    )

    config = services.config
    settings = config.knowledge
    sources: list[ContextSource] = []
    if services.knowledge is not None and options.knowledge:
        sources.append(KnowledgeSource(
            services.knowledge, passages=settings.passages, token_budget=settings.token_budget,
            min_similarity=settings.min_similarity, timeout_s=settings.timeout_s))
    if options.passages is not None:
        sources.append(ProvidedPassages(options.passages, passages=settings.passages,
                                        token_budget=settings.token_budget,
                                        timeout_s=settings.timeout_s))
    suffix = KNOWLEDGE_INSTRUCTIONS if sources else ""
    if suffix:
        prompt = options.system_prompt or config.turn.reply.system_prompt
        options = dataclasses.replace(options, system_prompt=prompt + suffix)
    sources.extend(options.context_sources)
    caller_id: str | None = None
    memory: str | None = None
    if services.memory is not None and options.memory:
        caller_id = options.caller_id if options.caller_id is not None else token_subject
        if caller_id is not None and not valid_caller_id(caller_id):
            log.warning("memory: caller id %r is not usable; this call is not remembered",
                        caller_id[:40])
            caller_id = None
        if caller_id is not None:
            memory = await services.memory.context_for(caller_id)
    return CallExtras(options, tuple(sources), caller_id, memory, suffix)


def knowledge_prompt(state_prompt: str, knowledge_on: bool) -> str:
    """The system prompt the server warms the LLM with (its prefix stays cached)."""
    from callbot.pipeline.knowledge.source import KNOWLEDGE_INSTRUCTIONS

    return state_prompt + KNOWLEDGE_INSTRUCTIONS if knowledge_on else state_prompt
