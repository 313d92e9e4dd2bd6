"""The embedding surface: `create_app(config)` and `mount(app, prefix, config)`."""

from __future__ import annotations

import asyncio
import logging
import threading

from aiohttp import web

from callbot.pipeline.engines import Engines, load_engines
from callbot.pipeline.errors import EngineError
from callbot.pipeline.settings import EngineSettings
from callbot.pipeline.vision import VisionEngine, VisionSettings, load_vision
from callbot.rtc import audio_level
from callbot.rtc.errors import MediaSettingsConflict
from callbot.rtc.ice import claim_host_addresses, release_host_addresses

from .config import CallbotConfig
from .errors import json_errors
from .hooks import CallHooks
from .openapi import openapi
from .realtime import setup as setup_realtime
from .routes import routes
from .state import STATE, AppState

log = logging.getLogger(__name__)

_MOUNTED = web.AppKey("callbot_mounted_ice_hosts", tuple)  # ice_hosts of each mounted app
_engine_cache: dict[EngineSettings, Engines] = {}
_engine_lock = threading.Lock()
_vision_cache: dict[VisionSettings, VisionEngine | None] = {}


def shared_engines(settings: EngineSettings, warm_up_prompt: str | None = None) -> Engines:
    """Models load once per process and serve every call of every app (blocking)."""
    with _engine_lock:
        engines = _engine_cache.get(settings)
        if engines is None:
            engines = load_engines(settings, warm_up_prompt=warm_up_prompt)
            _engine_cache[settings] = engines
        return engines


def shared_vision(settings: VisionSettings) -> VisionEngine | None:
    """The vision engine, loaded once per process (blocking). An offline engine that cannot
    load (rapidocr or opencv-data missing) leaves vision off, with a warning."""
    with _engine_lock:
        if settings not in _vision_cache:
            try:
                _vision_cache[settings] = load_vision(settings)
            except EngineError as exc:
                log.warning("vision is off: %s", exc)
                _vision_cache[settings] = None
        return _vision_cache[settings]


def create_app(config: CallbotConfig | None = None, *, engines: Engines | None = None,
               hooks: CallHooks | None = None) -> web.Application:
    """A complete callbot app: call API, demo page, metrics.

    Models load on start-up (in a thread) unless `engines` is given. `hooks` (see
    signalling/hooks.py) lets an embedding app follow calls, choose per-call options and
    offer tools to the LLM.
    """
    config = config or CallbotConfig()
    app = web.Application(middlewares=[json_errors], client_max_size=config.limits.max_body_bytes)
    app.add_routes(routes)
    setup_realtime(app)  # the OpenAI Realtime protocol: /v1/realtime...
    app.router.add_get("/v1/openapi.json", openapi)

    async def start(app: web.Application) -> None:
        audio_level.install()
        if config.ice_hosts is not None:  # process-wide: a conflicting app is refused here
            claims.append(claim_host_addresses(config.ice_hosts))
        if engines is not None:
            loaded = engines
        else:
            loaded = await asyncio.to_thread(
                shared_engines, config.engines, config.turn.reply.system_prompt)
        vision = await asyncio.to_thread(shared_vision, config.vision)
        app[STATE] = AppState(config=config, engines=loaded, hooks=hooks or CallHooks(),
                              vision=vision)

    async def stop(app: web.Application) -> None:
        state = app.get(STATE)
        if state is not None:
            state.draining = True  # new calls get 503; active ones may finish for drain_s
            waits = [asyncio.ensure_future(c.closed.wait()) for c in state.registry.all()]
            if waits:
                await asyncio.wait(waits, timeout=config.limits.drain_s)
                for wait in waits:
                    wait.cancel()
            await state.registry.close_all("server_shutdown")
            await state.hook_runner.wait_idle()

    async def release(app: web.Application) -> None:
        while claims:
            release_host_addresses(claims.pop())

    claims: list[int] = []
    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.on_cleanup.append(release)
    return app


def mount(parent: web.Application, prefix: str = "/callbot",
          config: CallbotConfig | None = None, *, engines: Engines | None = None,
          hooks: CallHooks | None = None) -> web.Application:
    """Add callbot under `prefix` of an existing aiohttp app; returns the sub-app."""
    sub = create_app(config, engines=engines, hooks=hooks)
    wanted = (config or CallbotConfig()).ice_hosts
    for other in parent.get(_MOUNTED, ()):
        if wanted is not None and other is not None and other != wanted:
            raise MediaSettingsConflict(
                f"ice_hosts {list(wanted)} differs from {list(other)} of a callbot app already "
                "mounted on this app: ICE host addresses are process-wide, use one setting")
    parent[_MOUNTED] = (*parent.get(_MOUNTED, ()), wanted)
    prefix = prefix.rstrip("/")

    async def to_demo(request: web.Request) -> web.Response:
        raise web.HTTPFound(prefix + "/")  # the sub-app only routes paths under prefix + "/"

    parent.router.add_get(prefix, to_demo)  # before the sub-app, which would 404 it
    parent.add_subapp(prefix, sub)
    return sub
