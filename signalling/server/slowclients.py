"""Slow clients: a connection that never finishes its request headers is closed after
`limits.header_timeout_s`, and at most `limits.max_pending_connections` such connections are
held at once (more are closed as they arrive). Bodies have their own timeout (routes.py).

aiohttp has no header timeout of its own (only keep-alive), so `callbot serve` listens with
`GuardedTCPSite`; an embedding app does the same:

    runner = web.AppRunner(app); await runner.setup()
    await GuardedTCPSite(runner, host, port, limits=config.limits).start()
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from callbot.signalling.config import Limits

log = logging.getLogger(__name__)


class _Pending:
    """The connections still waiting for their first request's headers."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.count = 0
        self.refused = 0  # closed on arrival: too many pending
        self.timed_out = 0  # closed: headers not done in time


class _GuardedHandler(RequestHandler):
    __slots__ = ("_guard", "_guard_timer", "_guard_pending")

    def __init__(self, guard: _Pending, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard
        self._guard_timer: asyncio.TimerHandle | None = None
        self._guard_pending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        super().connection_made(transport)
        if guard.count >= guard.limits.max_pending_connections:
            guard.refused += 1
            asyncio.get_running_loop().call_soon(transport.close)  # after aiohttp's start
            return
        guard.count += 1
        self._guard_pending = True
        self._guard_timer = asyncio.get_running_loop().call_later(
            guard.limits.header_timeout_s, self._headers_too_slow)

    def _settled(self) -> None:
        if self._guard_pending:
            self._guard_pending = False
            self._guard.count -= 1
        if self._guard_timer is not None:
            self._guard_timer.cancel()
            self._guard_timer = None

    def _headers_too_slow(self) -> None:
        self._guard_timer = None
        if self._guard_pending:
            self._guard.timed_out += 1
            self._settled()
            if self.transport is not None:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._guard_pending and self._request_count > 0:  # a request's headers are in
            self._settled()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._settled()
        super().connection_lost(exc)


class GuardedTCPSite(web.TCPSite):
    """`web.TCPSite` with the header timeout and the pending-connection bound."""

    def __init__(self, runner: web.BaseRunner, host: str | None = None,
                 port: int | None = None, *, limits: Limits | None = None,
                 **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.pending = _Pending(limits or Limits())

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        # aiohttp reads what is left of an unread body for `lingering_time` (10 s) before it
        # closes; a client refused for trickling its body gets 1 s.
        kwargs = {"lingering_time": 1.0, **server._kwargs}

        def handler() -> RequestHandler:
            return _GuardedHandler(self.pending, server, loop=loop, **kwargs)

        self._server = await loop.create_server(
            handler, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        sockets = self._server.sockets
        if sockets:
            self._bound_port = sockets[0].getsockname()[1]
