"""Prometheus metrics of one app (its own registry, so several apps can live in a process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_STAGE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class CallMetrics:
    def __init__(self, active_calls: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge("callbot_active_calls", "Calls in progress", registry=r)
        self.active.set_function(active_calls)
        self.setups = Counter("callbot_call_setups", "Calls negotiated", registry=r)
        self.rejected = Counter(
            "callbot_call_rejections", "Offers refused", ["reason"], registry=r
        )
        self.ended = Counter("callbot_calls_ended", "Calls ended", ["reason"], registry=r)
        self.stage = Histogram(
            "callbot_stage_seconds", "Per-turn stage latency", ["stage"],
            buckets=_STAGE_BUCKETS, registry=r,
        )
        self.frames_late = Counter(
            "callbot_frames_late", "Outgoing audio frames sent late", registry=r
        )
        self.frames_out = Counter("callbot_frames_sent", "Outgoing audio frames", registry=r)
        self.onset_pauses = Counter(
            "callbot_onset_pauses", "Times the bot's voice paused at a caller's voice onset",
            registry=r)
        self.onset_pauses_resumed = Counter(
            "callbot_onset_pauses_resumed",
            "Onset pauses after which the bot went on (no speech followed: a false alarm)",
            registry=r)

    def call_started(self) -> None:
        self.setups.inc()

    def call_rejected(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def call_ended(self, reason: str, frames_sent: int, frames_late: int,
                   onset_pauses: int = 0, onset_pauses_resumed: int = 0) -> None:
        self.ended.labels(reason).inc()
        self.frames_out.inc(frames_sent)
        self.frames_late.inc(frames_late)
        self.onset_pauses.inc(onset_pauses)
        self.onset_pauses_resumed.inc(onset_pauses_resumed)

    def turn(self, fields: dict[str, Any]) -> None:
        for key in ("asr_ms", "llm_first_token_ms", "tts_first_ms", "end_of_turn_ms",
                    "first_audio_ms"):
            if key in fields:
                self.stage.labels(key.removesuffix("_ms")).observe(fields[key] / 1000)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
