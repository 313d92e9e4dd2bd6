"""What one callbot app holds: its config, the shared engines, the live calls, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from callbot.pipeline import events as ev
from callbot.pipeline.engines import Engines
from callbot.pipeline.lang import voices_by_language
from callbot.pipeline.safety.guard import TurnGuard
from callbot.pipeline.safety.pii import redact_pii
from callbot.pipeline.vision import VisionEngine
from callbot.rtc.ice import IceServer, turn_rest_credentials
from callbot.rtc.offer_guard import CandidatePolicy, local_ice_addresses
from callbot.signalling.calls.assembly import CallServices
from callbot.signalling.calls.call import Call
from callbot.signalling.calls.handle import CallHandle
from callbot.signalling.calls.hooks import CallHooks, HookRunner
from callbot.signalling.calls.memory import MemoryService
from callbot.signalling.calls.registry import CallRegistry
from callbot.signalling.cluster.shared import ClusterUnavailable, LocalStore, SharedStore
from callbot.signalling.config import CallbotConfig
from callbot.signalling.errors import ApiError
from callbot.signalling.ratelimit import ClientLimiter, RateLimited
from callbot.signalling.records.service import RecordService
from callbot.signalling.server.auth import Authenticator, Principal
from callbot.signalling.server.capacity import CapacityModel
from callbot.signalling.server.metrics import CallCounts, CallMetrics
from callbot.signalling.server.overload import OverloadMonitor

if TYPE_CHECKING:
    from callbot.pipeline.knowledge import KnowledgeBase


@dataclass
class AppState:
    config: CallbotConfig
    engines: Engines
    hooks: CallHooks = field(default_factory=CallHooks)
    guard: TurnGuard | None = None  # safety: checks every caller turn and bot sentence
    vision: VisionEngine | None = None  # reads the caller's camera (None: vision off)
    registry: CallRegistry = field(init=False)
    overload: OverloadMonitor = field(init=False)
    capacity: CapacityModel = field(init=False)
    metrics: CallMetrics = field(init=False)
    auth: Authenticator = field(init=False)
    limiter: ClientLimiter = field(init=False)
    hook_runner: HookRunner = field(init=False)
    candidate_policy: CandidatePolicy = field(init=False)
    store: SharedStore = field(init=False)  # LocalStore, or cluster.RedisStore (app start)
    draining: bool = False
    knowledge: KnowledgeBase | None = None  # config.knowledge.db, opened at start-up
    memory: MemoryService | None = None  # config.memory.enabled
    records: RecordService | None = None  # the call record (transcripts, recordings, traces)

    def __post_init__(self) -> None:
        limits = self.config.limits
        self.overload = OverloadMonitor(limits.overload_queue_ms, limits.overload_loop_lag_ms)
        self.capacity = CapacityModel(self.config.capacity, limits.max_calls)
        self.registry = CallRegistry(limits.max_calls, overloaded=lambda: self.overload.reason(),
                                     capacity=lambda: self.capacity.capacity,
                                     retry_after_s=self.config.capacity.retry_after_s)
        self.metrics = CallMetrics(lambda: len(self.registry),
                                   lambda: (call_counts(c) for c in self.registry.all()),
                                   capacity=lambda: self.registry.capacity,
                                   headroom=lambda: self.headroom)
        self.auth = Authenticator(self.config.auth)
        self.limiter = ClientLimiter(limits.max_calls_per_client, limits.call_rate_per_minute)
        self.hook_runner = HookRunner(self.hooks)
        config = self.config
        self.candidate_policy = CandidatePolicy.for_deployment(
            config.ice_remote_networks,
            config.ice_hosts if config.ice_hosts is not None else local_ice_addresses(),
            config.ice_public_ip)
        self.store = LocalStore(self.limiter)
        self._clients: dict[str, str] = {}  # call id -> client id, for the per-client limits
        self.language_voices = voices_by_language(
            self.allowed_languages(), self.engines.tts.voices, self.config.tts,
            self.config.engines.tts_voice)
        self._owners: dict[str, str] = {}  # call id -> the identity that started it

    @property
    def headroom(self) -> int:
        """Calls this node can still take within its capacity (reserved ones count)."""
        return max(0, self.registry.capacity - self.registry.load)

    def services(self) -> CallServices:
        """What this app's calls are built from (`calls/assembly.py`)."""
        return CallServices(
            config=self.config, engines=self.engines, guard=self.guard, vision=self.vision,
            knowledge=self.knowledge, memory=self.memory, languages=self.allowed_languages(),
            language_voices=self.language_voices, on_event=self.on_call_event,
            on_closed=self.on_call_closed)

    def refuse_if_unavailable(self) -> None:
        if not self.store.available:
            self.metrics.call_rejected("cluster_unavailable")
            raise ApiError(503, "cluster_unavailable",
                           "the cluster's shared state (Redis) is unreachable: no new calls "
                           "until it is back; calls in progress go on",
                           headers={"Retry-After": "5"})

    async def admit(self, principal: Principal) -> None:
        """Single-use token and per-client limits before a call is negotiated: 401/429/503."""
        try:
            if principal.nonce is not None and not await self.store.use_nonce(*principal.nonce):
                raise ApiError(401, "unauthorized", "this call token was already used")
            await self.store.admit(principal.client_id)
        except RateLimited as exc:
            self.metrics.call_rejected("rate_limited")
            raise ApiError(429, "rate_limited", str(exc),
                           headers={"Retry-After": str(exc.retry_after)}) from None
        except ClusterUnavailable:
            self.refuse_if_unavailable()
            raise

    def client_of(self, call_id: str) -> str:
        return self._clients.get(call_id, "unknown")

    async def call_started(self, call: Call, principal: Principal) -> None:
        self._clients[call.id] = principal.client_id
        self._owners[call.id] = principal.owner
        if self.records is not None:  # every entrance comes here: every call has a record
            self.records.attach(call, principal.owner)
        await self.store.call_started(call.id, principal.client_id, {
            "owner": principal.owner, "transport": call.transport.kind})
        self.hook_runner.started(CallHandle(
            call, client_id=principal.client_id, subject=principal.subject,
            remote=principal.remote,
        ))

    def calls_of(self, principal: Principal) -> list[Call]:
        """The live calls `principal` may see and end: its own (all of them for an admin)."""
        return [c for c in self.registry.all()
                if c.id in self._owners and principal.owns(self._owners[c.id])]

    async def ice_servers_for(self, request: web.Request, principal: Principal
                              ) -> tuple[IceServer, ...]:
        """The STUN/TURN servers of a call (or a page about to call): the configured ones,
        short-lived TURN REST credentials when a TURN shared secret is set, then the app's
        `ice_servers_factory`. The browser and the server's peer get the same list."""
        servers = self.config.ice_servers
        webrtc = self.config.webrtc
        if webrtc.turn_shared_secret:
            # The user part names the credential (coturn logs it); ':' separates the expiry.
            user = principal.client_id.replace(":", "-")[:64]
            servers += (turn_rest_credentials(webrtc.turn_urls, webrtc.turn_shared_secret,
                                              ttl_s=webrtc.turn_credential_ttl_s, user=user),)
        return await self.hook_runner.ice_servers_for(request, servers)

    def client_prompt_allowed(self, principal: Principal) -> bool:
        policy = self.config.auth.client_system_prompt
        return policy == "allow" or (policy == "auto" and principal.authenticated)

    def allowed_languages(self) -> tuple[str, ...]:
        """The configured languages the recognizer can hear (tiny.en: English only)."""
        recognizable = self.engines.asr.languages
        allowed = tuple(lang for lang in self.config.languages
                        if recognizable is None or lang in recognizable)
        return allowed or ("en",)

    def on_call_event(self, call: Call, event: ev.Event) -> None:
        if isinstance(event, ev.TurnMetrics):
            self.metrics.turn(event.fields())
            if event.first_audio_ms is not None:  # a turn answered: what capacity learns from
                self.capacity.observe(event.first_audio_ms, len(self.registry))
        elif isinstance(event, ev.TranscriptFinal):
            text = redact_pii(event.text) if self.config.safety.redact_pii else event.text
            self.hook_runner.transcript(call.id, text)

    async def on_call_closed(self, call: Call) -> None:
        self.registry.discard(call)
        # In the same step: /metrics sums live calls and ended ones, and must never go back.
        self.metrics.call_ended(call.close_reason or "unknown", call_counts(call))
        self._owners.pop(call.id, None)
        client = self._clients.pop(call.id, None)
        if client is not None:
            await self.store.release(client)
            await self.store.call_ended(call.id, client, call.close_reason or "unknown")
        if self.records is not None:
            record = await self.records.finish(call)
            if record is not None:
                self.hook_runner.record(call.id, record)
        self.hook_runner.ended(call.id, call.close_reason or "unknown")
        if self.memory is not None:
            self.memory.call_ended(call)


def call_counts(call: Call) -> CallCounts:
    output = call.output
    session = getattr(call, "session", None)  # set by the assembly; absent if it failed
    return CallCounts(getattr(output, "frames_sent", 0), getattr(output, "frames_late", 0),
                      getattr(session, "onset_pauses", 0),
                      getattr(session, "onset_pauses_resumed", 0))


STATE = web.AppKey("callbot_state", AppState)
