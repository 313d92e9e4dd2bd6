"""Load-test figures: per-call results summarized into p50/p95/max, the table, live progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

STAGES = ("asr_ms", "llm_first_token_ms", "tts_first_ms", "end_of_turn_ms", "first_audio_ms")
FIGURES = ("setup_ms", "v2v_ms", "barge_in_ms", "wer", "gaps", "echo_ms") + tuple(
    f"server.{s}" for s in STAGES
)


def figure_values(results: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {name: [] for name in FIGURES}
    for r in results:
        if r.get("setup_ms") is not None:
            values["setup_ms"].append(r["setup_ms"])
        values["gaps"].append(float(r.get("gaps", 0)))
        for turn in r.get("turns", []):
            for key in ("v2v_ms", "barge_in_ms", "wer", "echo_ms"):
                if turn.get(key) is not None:
                    values[key].append(turn[key])
            for stage, v in turn.get("server", {}).items():
                values[f"server.{stage}"].append(v)
    return values


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    figures = {}
    for name, vals in figure_values(results).items():
        if vals:
            figures[name] = {"n": len(vals), "p50": round(percentile(vals, 50), 3),
                             "p95": round(percentile(vals, 95), 3),
                             "max": round(float(max(vals)), 3)}
    reasons: dict[str, int] = {}
    for r in results:
        if not r.get("ok"):
            key = r.get("reason") or "unknown"
            reasons[key] = reasons.get(key, 0) + 1
    ok = sum(1 for r in results if r.get("ok"))
    return {"calls_ok": ok, "calls_failed": len(results) - ok, "failures": reasons,
            "figures": figures}


def exit_code(report: dict[str, Any], max_p95_ms: float | None) -> int:
    summary = report["summary"]
    if summary["calls_failed"]:
        return 1
    v2v = summary["figures"].get("v2v_ms")
    if max_p95_ms is not None and v2v is not None and v2v["p95"] > max_p95_ms:
        return 1
    return 0


def format_summary(report: dict[str, Any], max_p95_ms: float | None = None) -> str:
    s = report["summary"]
    lines = [f"{'figure':<26}{'n':>5}{'p50':>10}{'p95':>10}{'max':>10}"]
    for name, f in s["figures"].items():
        digits = 3 if name == "wer" else (0 if name == "gaps" else 1)
        lines.append(f"{name:<26}{f['n']:>5}{f['p50']:>10.{digits}f}{f['p95']:>10.{digits}f}"
                     f"{f['max']:>10.{digits}f}")
    lines.append(f"calls: {s['calls_ok']} ok, {s['calls_failed']} failed "
                 f"({report['calls']} calls, {report['procs']} process(es), "
                 f"{report['duration_s']:.1f} s)")
    for reason, count in sorted(s["failures"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {count} x {reason}")
    v2v = s["figures"].get("v2v_ms")
    if max_p95_ms is not None and v2v is not None and v2v["p95"] > max_p95_ms:
        lines.append(f"FAIL: v2v p95 {v2v['p95']:.0f} ms > budget {max_p95_ms:.0f} ms")
    return "\n".join(lines)


class Progress:
    """One live line: refreshed in place on a terminal, plain lines (at most 1/s) otherwise."""

    def __init__(self, total: int, stream: Any = None, *, interval_s: float = 1.0) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if not self.tty else 0.1
        self.connected = self.ok = self.failed = self.turns = 0
        self.v2v: list[float] = []
        self._last = 0.0
        self._last_line = ""
        self._started = time.monotonic()

    def update(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "connected":
            self.connected += 1
        elif kind == "turn":
            self.turns += 1
            v = message["turn"].get("v2v_ms")
            if v is not None:
                self.v2v.append(v)
        elif kind == "done":
            if message.get("ok"):
                self.ok += 1
            else:
                self.failed += 1
        now = time.monotonic()
        if now - self._last >= self.interval_s or kind == "done":
            self._last = now
            self._print(self.line())

    def line(self) -> str:
        active = self.connected - self.ok - self.failed
        v2v = (f" v2v p50 {percentile(self.v2v, 50):.0f} ms p95 {percentile(self.v2v, 95):.0f} ms"
               if self.v2v else "")
        return (f"[{time.monotonic() - self._started:6.1f}s] calls {self.ok + self.failed}"
                f"/{self.total} done ({self.ok} ok, {self.failed} failed), {max(0, active)} "
                f"active, {self.turns} turns{v2v}")

    def _print(self, line: str) -> None:
        if line == self._last_line:
            return
        self._last_line = line
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        self._print(self.line())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ---- command line -------------------------------------------------------------------------------
