"""Hooks for apps that embed callbot: call life-cycle callbacks, per-call options, tools.

    hooks = CallHooks(
        on_call_started=greet,                    # (call: CallHandle) -> None | awaitable
        on_call_ended=log_end,                    # (call, reason)
        on_transcript=save_line,                  # (call, text): each final caller transcript
        on_call_record=archive,                   # (call, record): the whole record at the end
        options_factory=options_for,              # (request, requested) -> CallOptions | None
        tools=[order_lookup],                     # pipeline.llm.tools.Tool, for every call
        ice_servers_factory=turn_credentials,     # (request) -> [IceServer]: per-call TURN
    )
    app = create_app(config, hooks=hooks)

`on_call_started` gets a `CallHandle`: the app can greet the caller (`call.say`), give the LLM
context (`call.add_context`), hang up, and follow the call's events. Callbacks run as background
tasks: a slow or failing callback never holds up a call (failures are logged).
`options_factory` runs inside the request, before negotiation: it sees the options the client
asked for (already validated) and returns the ones to use, e.g. a system prompt and tools chosen
for the signed-in user; raising `ApiError` refuses the call. `ice_servers_factory` also runs
inside the request, once per call: the servers it returns (e.g. TURN with short-lived
credentials) are used after the configured `ice_servers`; if it fails the call is refused with
503 `ice_unavailable`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from callbot.pipeline.llm.tools import Tool
from callbot.rtc.ice import IceServer
from callbot.signalling.calls.call import CallOptions
from callbot.signalling.calls.handle import CallHandle
from callbot.signalling.errors import ApiError

log = logging.getLogger(__name__)


MaybeAwaitable = Awaitable[None] | None
OptionsFactory = Callable[[web.Request, CallOptions],
                          CallOptions | None | Awaitable[CallOptions | None]]
IceServersFactory = Callable[[web.Request],
                             Sequence[IceServer] | Awaitable[Sequence[IceServer]]]


@dataclass(frozen=True)
class CallHooks:
    on_call_started: Callable[[CallHandle], MaybeAwaitable] | None = None
    on_call_ended: Callable[[CallHandle, str], MaybeAwaitable] | None = None
    on_transcript: Callable[[CallHandle, str], MaybeAwaitable] | None = None
    # the call's record when it ends (signalling/records/): the transcript's JSON, as
    # `GET /v1/calls/{id}/transcript` gives it; before `on_call_ended`
    on_call_record: Callable[[CallHandle, dict[str, Any]], MaybeAwaitable] | None = None
    options_factory: OptionsFactory | None = None
    tools: Sequence[Tool] = field(default_factory=tuple)  # offered to the LLM in every call
    ice_servers_factory: IceServersFactory | None = None  # per-call STUN/TURN (credentials)


class HookRunner:
    """Runs an app's hooks in the background and keeps each live call's `CallHandle`."""

    def __init__(self, hooks: CallHooks) -> None:
        self.hooks = hooks
        self.calls: dict[str, CallHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def options_for(self, request: web.Request | None,
                          requested: CallOptions) -> CallOptions:
        """`request` None: a phone call (no HTTP request; the factory is not asked)."""
        options = requested
        factory = self.hooks.options_factory
        if factory is not None and request is not None:
            result = factory(request, requested)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                options = result
        if not options.tools and self.hooks.tools:
            options = dataclasses.replace(options, tools=tuple(self.hooks.tools))
        return options

    async def ice_servers_for(self, request: web.Request,
                              configured: Sequence[IceServer]) -> tuple[IceServer, ...]:
        """The configured servers plus the factory's for this call (ApiError 503 if it fails)."""
        factory = self.hooks.ice_servers_factory
        if factory is None:
            return tuple(configured)
        try:
            result = factory(request)
            if inspect.isawaitable(result):
                result = await result
            extra = tuple(result)
            if not all(isinstance(s, IceServer) for s in extra):
                raise TypeError("ice_servers_factory must return IceServer objects")
        except ApiError:
            raise
        except Exception:
            log.exception("ice_servers_factory failed")
            raise ApiError(503, "ice_unavailable",
                           "no relay servers are available right now; try again") from None
        return tuple(configured) + extra

    def started(self, call: CallHandle) -> None:
        self.calls[call.call_id] = call
        self._fire(self.hooks.on_call_started, call)

    def transcript(self, call_id: str, text: str) -> None:
        info = self.calls.get(call_id)
        if info is not None:
            self._fire(self.hooks.on_transcript, info, text)

    def record(self, call_id: str, record: dict[str, Any]) -> None:
        info = self.calls.get(call_id)
        if info is not None:
            self._fire(self.hooks.on_call_record, info, record)

    def ended(self, call_id: str, reason: str) -> None:
        info = self.calls.pop(call_id, None)
        if info is not None:
            self._fire(self.hooks.on_call_ended, info, reason)

    def _fire(self, callback: Callable[..., MaybeAwaitable] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
        except Exception:
            log.exception("hook %s failed", getattr(callback, "__name__", callback))
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hook failed", exc_info=task.exception())

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Let pending hook tasks finish (on shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
