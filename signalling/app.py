"""The embedding surface: `create_app(config)` and `mount(app, prefix, config)`."""

from __future__ import annotations

import asyncio
import logging
import threading

from aiohttp import web

from pipeline.engines import Engines, load_engines
from pipeline.settings import EngineSettings
from rtc import audio_level
from rtc.ice import restrict_host_addresses

from .config import CallbotConfig
from .errors import json_errors
from .routes import routes
from .state import STATE, AppState

log = logging.getLogger(__name__)

_engine_cache: dict[EngineSettings, Engines] = {}
_engine_lock = threading.Lock()


def shared_engines(settings: EngineSettings) -> Engines:
    """Models load once per process and serve every call of every app (blocking)."""
    with _engine_lock:
        engines = _engine_cache.get(settings)
        if engines is None:
            engines = _engine_cache[settings] = load_engines(settings)
        return engines


def create_app(config: CallbotConfig | None = None, *, engines: Engines | None = None
               ) -> web.Application:
    """A complete callbot app: call API, demo page, metrics.

    Models load on start-up (in a thread) unless `engines` is given.
    """
    config = config or CallbotConfig()
    app = web.Application(middlewares=[json_errors], client_max_size=config.limits.max_body_bytes)
    app.add_routes(routes)

    async def start(app: web.Application) -> None:
        audio_level.install()
        if config.ice_hosts is not None:
            restrict_host_addresses(config.ice_hosts)
        loaded = engines or await asyncio.to_thread(shared_engines, config.engines)
        app[STATE] = AppState(config=config, engines=loaded)

    async def stop(app: web.Application) -> None:
        state = app.get(STATE)
        if state is not None:
            state.draining = True
            await state.registry.close_all("server_shutdown")

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return app


def mount(parent: web.Application, prefix: str = "/callbot",
          config: CallbotConfig | None = None, *, engines: Engines | None = None
          ) -> web.Application:
    """Add callbot under `prefix` of an existing aiohttp app; returns the sub-app."""
    sub = create_app(config, engines=engines)
    parent.add_subapp(prefix, sub)
    return sub
