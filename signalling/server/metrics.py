"""Prometheus metrics of one app (its own registry, so several apps can live in a process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

_STAGE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class CallCounts(NamedTuple):
    """What one call has counted so far (its outgoing audio, its onset pauses)."""

    frames_sent: int = 0
    frames_late: int = 0
    onset_pauses: int = 0
    onset_pauses_resumed: int = 0


_PER_CALL = (  # (name, help) of each CallCounts field, in order
    ("callbot_frames_sent", "Outgoing audio frames"),
    ("callbot_frames_late", "Outgoing audio frames sent late"),
    ("callbot_onset_pauses", "Times the bot's voice paused at a caller's voice onset"),
    ("callbot_onset_pauses_resumed",
     "Onset pauses after which the bot went on (no speech followed: a false alarm)"),
)


class _PerCallCounters(Collector):
    """Counters that move during a call: the ended calls' totals plus what each live call has
    counted so far, summed when /metrics is read (no timer; nothing to miss between reads).
    A call's counts move from 'live' to 'ended' in one step (`call_ended`, with the call
    already out of the live set), so the sum never goes back."""

    def __init__(self, live: Callable[[], Iterable[CallCounts]]) -> None:
        self._live = live
        self.ended = [0] * len(_PER_CALL)

    def collect(self) -> Iterator[Metric]:
        totals = list(self.ended)
        for counts in self._live():
            for i, value in enumerate(counts):
                totals[i] += value
        for (name, documentation), value in zip(_PER_CALL, totals, strict=True):
            yield CounterMetricFamily(name, documentation, value=value)


class CallMetrics:
    def __init__(self, active_calls: Callable[[], int],
                 live_counts: Callable[[], Iterable[CallCounts]] = tuple, *,
                 capacity: Callable[[], int] | None = None,
                 headroom: Callable[[], int] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge("callbot_active_calls", "Calls in progress", registry=r)
        self.active.set_function(active_calls)
        if capacity is not None and headroom is not None:
            self.capacity = Gauge("callbot_capacity_calls", "Talking calls this node takes "
                                  "within its latency budget (measured capacity)", registry=r)
            self.capacity.set_function(capacity)
            self.headroom = Gauge("callbot_capacity_headroom",
                                  "Calls this node can still take (capacity - calls)", registry=r)
            self.headroom.set_function(headroom)
        self.setups = Counter("callbot_call_setups", "Calls negotiated", registry=r)
        self.rejected = Counter(
            "callbot_call_rejections", "Offers refused", ["reason"], registry=r
        )
        self.ended = Counter("callbot_calls_ended", "Calls ended", ["reason"], registry=r)
        self.stage = Histogram(
            "callbot_stage_seconds", "Per-turn stage latency", ["stage"],
            buckets=_STAGE_BUCKETS, registry=r,
        )
        self.per_call = _PerCallCounters(live_counts)
        r.register(self.per_call)

    def call_started(self) -> None:
        self.setups.inc()

    def call_rejected(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def call_ended(self, reason: str, counts: CallCounts) -> None:
        """Call it in the same step that takes the call out of `live_counts`."""
        self.ended.labels(reason).inc()
        for i, value in enumerate(counts):
            self.per_call.ended[i] += value

    def turn(self, fields: dict[str, Any]) -> None:
        for key in ("asr_ms", "llm_first_token_ms", "tts_first_ms", "end_of_turn_ms",
                    "first_audio_ms"):
            if key in fields:
                self.stage.labels(key.removesuffix("_ms")).observe(fields[key] / 1000)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
