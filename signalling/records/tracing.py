"""OpenTelemetry traces of calls: a span per call, per turn, per stage.

On when the standard variables name an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SERVICE_NAME`, `OTEL_SDK_DISABLED` ... apply);
off otherwise. `opentelemetry-sdk` and its OTLP/HTTP exporter are default dependencies.
Spans go through a `BatchSpanProcessor`: exporting runs on its own thread, no
call waits on it (a full export queue drops spans).

A turn's stages are laid out from its `metrics` event, which measures them from the end of the
caller's speech: VAD end of turn, ASR, the LLM (GenAI `chat` span, with the first token as an
event), TTS until its first audio, and playout from the first audio heard.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from callbot.pipeline import events as ev

log = logging.getLogger(__name__)


def tracing_configured(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class CallTracer:
    """The app's tracer provider; `call(call_id)` starts one call's trace."""

    def __init__(self, provider: Any, llm_model: str | None = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("callbot")
        self.llm_model = llm_model

    @classmethod
    def from_env(cls, llm_model: str | None = None) -> CallTracer | None:
        if not tracing_configured():
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("OTEL_* is set but the tracing packages are missing: "
                        "pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http")
            return None
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                   "callbot")})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_* config
        return cls(provider, llm_model)

    def call(self, call_id: str, transport: str) -> CallTrace:
        span = self._tracer.start_span("call", attributes={
            "callbot.call_id": call_id, "callbot.transport": transport})
        return CallTrace(self, span, call_id)

    def shutdown(self) -> None:
        """Flush what is queued (bounded by the processor's timeout); app shutdown only."""
        self._provider.shutdown()


class CallTrace:
    def __init__(self, tracer: CallTracer, span: Any, call_id: str) -> None:
        self._tracer = tracer
        self.span = span
        self.call_id = call_id
        self.turns = 0

    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.TurnMetrics):
            self._turn(event)

    def _turn(self, m: ev.TurnMetrics) -> None:
        from opentelemetry import trace

        self.turns += 1
        now = time.time_ns()
        ms = 1_000_000  # ns
        total = m.first_audio_ms if m.first_audio_ms is not None else max(
            [v for v in (m.end_of_turn_ms, m.llm_done_ms, m.asr_ms) if v is not None],
            default=0.0)
        start = now - int(total * ms)  # the end of the caller's speech
        tracer = self._tracer._tracer
        turn = tracer.start_span(
            "turn", context=trace.set_span_in_context(self.span), start_time=start,
            attributes={"callbot.call_id": self.call_id, "callbot.turn_id": m.turn_id,
                        **{f"callbot.{k}": v for k, v in m.fields().items()
                           if isinstance(v, int | float) and k != "turn_id"}})
        inside = trace.set_span_in_context(turn)

        def stage(name: str, begin_ms: float, length_ms: float | None,
                  attributes: dict[str, Any] | None = None,
                  event: tuple[str, float] | None = None) -> None:
            if length_ms is None:
                return
            span = tracer.start_span(name, context=inside, start_time=start + int(begin_ms * ms),
                                     attributes={"callbot.call_id": self.call_id,
                                                 **(attributes or {})})
            if event is not None:
                span.add_event(event[0], timestamp=start + int(event[1] * ms))
            span.end(end_time=start + int((begin_ms + length_ms) * ms))

        committed = m.end_of_turn_ms or 0.0
        stage("vad.end_of_turn", 0.0, m.end_of_turn_ms)
        stage("asr", max(0.0, committed - (m.asr_ms or 0.0)), m.asr_ms)
        model = self._tracer.llm_model or "llm"
        llm_attrs: dict[str, Any] = {"gen_ai.operation.name": "chat",
                                     "gen_ai.request.model": model}
        if m.llm_first_token_ms is not None:
            llm_attrs["callbot.llm_first_token_ms"] = m.llm_first_token_ms
        first = (("gen_ai.first_token", committed + m.llm_first_token_ms)
                 if m.llm_first_token_ms is not None else None)
        stage(f"chat {model}", committed, m.llm_done_ms or m.llm_first_token_ms, llm_attrs,
              first)
        first_token = committed + (m.llm_first_token_ms or 0.0)
        stage("tts.first_audio", first_token, m.tts_first_ms)
        if m.first_audio_ms is not None:
            stage("playout", m.first_audio_ms, 0.0)
        turn.end(end_time=now)

    def end(self, reason: str) -> None:
        self.span.set_attribute("callbot.close_reason", reason)
        self.span.set_attribute("callbot.turns", self.turns)
        self.span.end()
