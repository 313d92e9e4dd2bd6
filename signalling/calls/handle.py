"""`CallHandle`: what an embedding app holds of one live call.

Hooks receive it (`on_call_started(call)`); the app can then act on the call and follow it:

    async def greet(call: CallHandle) -> None:
        user = users[call.subject]
        call.add_context(f"The caller is {user.name}, customer since {user.since}.")
        call.say(f"Hello {user.name}, how can I help?")
        async for event in call.events():          # typed events until the call ends
            if isinstance(event, TranscriptFinal):
                ...

Every method is safe to call after the call ended (it does nothing then).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from callbot.pipeline.events import Event

if TYPE_CHECKING:
    from callbot.signalling.calls.call import Call, CallOptions

log = logging.getLogger(__name__)

EventCallback = Callable[[Event], Awaitable[None] | None]
EVENT_QUEUE_SIZE = 256  # an `events()` reader that falls this far behind loses the oldest


class CallHandle:
    def __init__(self, call: Call, *, client_id: str, subject: str | None,
                 remote: str | None) -> None:
        self._call = call
        self.call_id = call.id
        self.transport = call.transport.kind  # "webrtc" | "websocket" | "sip"
        self.client_id = client_id  # what the per-client limits count: token, subject or IP
        self.subject = subject  # the `sub` of a signed call token (the signed-in user)
        self.remote = remote  # the client's address
        self.options: CallOptions = call.options
        self.started_wall = call.created_wall  # time.time() at set-up

    # ---- state --------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """new | connecting | active | closing | closed"""
        return self._call.state

    @property
    def bot_state(self) -> str:
        """listening | thinking | speaking"""
        return self._call.session.state

    @property
    def ended(self) -> bool:
        return self._call.closed.is_set()

    @property
    def close_reason(self) -> str | None:
        return self._call.close_reason

    async def wait_closed(self) -> None:
        await self._call.closed.wait()

    # ---- actions ------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Speak `text` now, as the bot; the caller can interrupt it like any reply."""
        if not self.ended:
            self._call.session.say(text)

    def submit_text(self, text: str, *, look: bool = False) -> None:
        """A turn as if the caller had typed it: the bot answers it. `look`: answer it about
        the caller's camera picture (when the server has a vision engine)."""
        if not self.ended:
            self._call.session.submit_text(text, look=look)

    def add_context(self, text: str) -> None:
        """A note the LLM sees for the rest of the call (e.g. the customer record)."""
        if not self.ended:
            self._call.session.add_context(text)

    def cancel_response(self) -> None:
        """Stop the bot's current reply (what was heard stays in the history)."""
        if not self.ended:
            self._call.session.cancel_response()

    async def hang_up(self, reason: str = "app_hangup") -> None:
        """End the call; `reason` shows in `/metrics` and `on_call_ended`."""
        await self._call.close(reason)

    # ---- following the conversation -------------------------------------------------------

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event)` for each event of this call (coroutines run as tasks; a
        failing callback is logged and never harms the call). Returns an unsubscribe."""

        def deliver(event: Event) -> None:
            try:
                result = callback(event)
            except Exception:
                log.exception("call %s: event subscriber failed", self.call_id)
                return
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                task.add_done_callback(_log_failure)

        self._call.listeners.append(deliver)

        def unsubscribe() -> None:
            if deliver in self._call.listeners:
                self._call.listeners.remove(deliver)

        return unsubscribe

    async def events(self) -> AsyncIterator[Event]:
        """The call's events as they happen, until the call ends (bounded: a slow reader
        loses the oldest events, never the server's memory)."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(EVENT_QUEUE_SIZE)

        def push(event: Event | None) -> None:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

        unsubscribe = self.subscribe(push)
        closed = asyncio.ensure_future(self._call.closed.wait())
        closed.add_done_callback(lambda _: push(None))
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            unsubscribe()
            closed.cancel()

    def __repr__(self) -> str:
        return f"<CallHandle {self.call_id} {self.state}>"


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("event subscriber failed", exc_info=task.exception())
