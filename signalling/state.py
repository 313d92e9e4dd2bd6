"""What one callbot app holds: its config, the shared engines, the live calls, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pipeline.engines import Engines

from .call import Call
from .config import CallbotConfig
from .metrics import CallMetrics
from .registry import CallRegistry


@dataclass
class AppState:
    config: CallbotConfig
    engines: Engines
    registry: CallRegistry = field(init=False)
    metrics: CallMetrics = field(init=False)
    draining: bool = False

    def __post_init__(self) -> None:
        self.registry = CallRegistry(self.config.limits.max_calls)
        self.metrics = CallMetrics(lambda: len(self.registry))

    def allowed_languages(self) -> tuple[str, ...]:
        return self.config.languages if self.config.engines.asr_model == "base" else ("en",)

    def on_call_event(self, call: Call, name: str, fields: dict[str, Any]) -> None:
        if name == "metrics":
            self.metrics.turn(fields)

    def on_call_closed(self, call: Call) -> None:
        self.registry.discard(call)
        self.metrics.call_ended(
            call.close_reason or "unknown", call.output.frames_sent, call.output.frames_late
        )


STATE = web.AppKey("callbot_state", AppState)
