"""`callbot loadtest`: many synthetic callers against one server, timed from the caller's side.

Each caller is a real aiortc peer (`rtc.caller.SyntheticCaller`) that follows a scenario:

    [{"say": "question.wav", "text": "how many legs does a spider have"},
     {"pause": 1.0},
     {"barge_in": "interrupt.wav", "text": "stop"}]

`say` speaks a clip and waits for the bot's answer; `barge_in` speaks over the bot right after
its answer to the previous `say` starts playing. Paths are relative to the scenario file. With
no scenario, questions are synthesized once with the Piper voice shipped in our dependencies.

Figures, per turn, on the caller's clock: voice-to-voice (end of the caller's speech -> first
loud bot audio), barge-in reaction (caller starts speaking over the bot -> bot audio stops),
call set-up (offer sent -> first audio frame received), gaps (> 60 ms between received frames),
and the word error rate of the server's `transcript.final` against the step's `text`.

Callers are spread over `--procs` processes, each with its own asyncio loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import json
import multiprocessing
import os
import queue as queue_mod
import sys
import tempfile
import time
import traceback
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

TURN_TIMEOUT_S = 30.0
DEFAULT_QUESTIONS = (
    "How many legs does a spider have?",
    "What is the capital of France?",
)
STAGES = ("asr_ms", "llm_first_token_ms", "tts_first_ms", "end_of_turn_ms", "first_audio_ms")
FIGURES = ("setup_ms", "v2v_ms", "barge_in_ms", "wer", "gaps", "echo_ms") + tuple(
    f"server.{s}" for s in STAGES
)


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    kind: str  # "say", "pause", "barge_in"
    path: str = ""
    text: str | None = None
    seconds: float = 0.0

    @property
    def is_turn(self) -> bool:
        return self.kind in ("say", "barge_in")


@dataclass
class LoadOptions:
    url: str = "http://127.0.0.1:8080"
    calls: int = 1
    procs: int = 1
    ramp_s: float = 0.0
    turns: int | None = None  # None: the scenario once
    scenario: list[Step] = field(default_factory=list)
    max_p95_ms: float | None = None
    ice_hosts: tuple[str, ...] | None = None
    echo: bool = False  # transport-only server: it echoes, it does not answer
    hangup_delay_s: float = 0.3


# ---- scenarios ----------------------------------------------------------------------------------


def load_scenario(path: str | os.PathLike[str]) -> list[Step]:
    """A JSON or YAML list of steps (or {"steps": [...]}); clip paths relative to the file."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {file}: {exc}") from exc
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        kind = file.suffix.lstrip(".") or "JSON"
        raise ScenarioError(f"{file}: not valid {kind}: {exc}") from exc
    return parse_scenario(data, file.parent)


def parse_scenario(data: Any, base: Path = Path(".")) -> list[Step]:
    if isinstance(data, dict):
        data = data.get("steps")
    if not isinstance(data, list) or not data:
        raise ScenarioError("a scenario is a non-empty list of steps")
    steps: list[Step] = []
    for i, raw in enumerate(data):
        where = f"step {i + 1}"
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where}: expected an object like {{\"say\": \"clip.wav\"}}")
        kinds = [k for k in ("say", "pause", "barge_in") if k in raw]
        if len(kinds) != 1:
            raise ScenarioError(f"{where}: needs exactly one of say, pause, barge_in")
        kind = kinds[0]
        text = raw.get("text")
        if text is not None and not isinstance(text, str):
            raise ScenarioError(f"{where}: 'text' must be a string")
        if kind == "pause":
            seconds = raw["pause"]
            if not isinstance(seconds, int | float) or seconds < 0:
                raise ScenarioError(f"{where}: 'pause' must be seconds >= 0")
            steps.append(Step("pause", seconds=float(seconds)))
            continue
        clip = raw[kind]
        if not isinstance(clip, str):
            raise ScenarioError(f"{where}: '{kind}' must be a WAV file path")
        clip_path = Path(clip) if Path(clip).is_absolute() else base / clip
        if not clip_path.is_file():
            raise ScenarioError(f"{where}: no such file {clip_path}")
        read_wav(clip_path)  # fail now, not in the middle of the load
        steps.append(Step(kind, path=str(clip_path), text=text))
    if not any(s.is_turn for s in steps):
        raise ScenarioError("the scenario has no say or barge_in step")
    return steps


def default_scenario(cache: Path | None = None) -> list[Step]:
    """The built-in questions, synthesized once with the packaged Piper voice (cached WAVs)."""
    folder = cache or Path(tempfile.gettempdir()) / "callbot-loadtest"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    synth = None
    try:
        for text in DEFAULT_QUESTIONS:
            key = hashlib.sha1(text.encode()).hexdigest()[:12]
            path = folder / f"piper-{key}.wav"
            if not path.exists():
                if synth is None:
                    from pipeline.tts.piper import PiperSynthesizer

                    synth = PiperSynthesizer()
                audio = asyncio.run(synth.synthesize(text))
                lead = np.zeros(int(0.3 * audio.sample_rate), dtype=np.int16)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                write_wav(tmp, np.concatenate([lead, audio.pcm]), audio.sample_rate)
                tmp.rename(path)
            paths.append(str(path))
    finally:
        if synth is not None:
            synth.close()
    first, second = zip(paths, DEFAULT_QUESTIONS, strict=True)
    return [
        Step("say", path=first[0], text=first[1]),
        Step("pause", seconds=0.5),
        Step("say", path=second[0], text=second[1]),
        Step("barge_in", path=first[0], text=first[1]),
    ]


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path)) as w:
            if w.getsampwidth() != 2:
                raise ScenarioError(f"{path}: expected 16-bit PCM WAV")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
            channels = w.getnchannels()
            rate = w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ScenarioError(f"{path}: not a WAV file: {exc}") from exc
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return pcm, rate


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype(np.int16).tobytes())


def plan_steps(scenario: Sequence[Step], turns: int | None) -> list[Step]:
    """The scenario, repeated until `turns` turns are planned (None: once)."""
    if turns is None:
        return list(scenario)
    plan: list[Step] = []
    count = 0
    while count < turns:
        for step in scenario:
            if count >= turns:
                break
            plan.append(step)
            count += step.is_turn
    return plan


# ---- one call -----------------------------------------------------------------------------------


class TurnFailed(RuntimeError):
    pass


async def run_call(index: int, options: LoadOptions, plan: Sequence[Step],
                   progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One synthetic call through the plan; a JSON-able result, never an exception."""
    from rtc.caller import CallFailed, SyntheticCaller, speech_end_offset

    result: dict[str, Any] = {"call": index, "ok": False, "reason": None, "setup_ms": None,
                              "turns": [], "gaps": 0, "call_id": None}
    started = time.monotonic()
    caller = SyntheticCaller(options.url, keep_audio=False)
    clips: dict[str, tuple[np.ndarray, int]] = {}

    def clip(path: str) -> tuple[np.ndarray, int]:
        if path not in clips:
            clips[path] = read_wav(path)
        return clips[path]

    try:
        result["call_id"] = await caller.connect()
        deadline = time.monotonic() + 10
        while caller.first_audio_at is None:
            if time.monotonic() > deadline:
                raise CallFailed("no audio received within 10 s of connecting")
            await asyncio.sleep(0.01)
        assert caller.offer_sent_at is not None
        result["setup_ms"] = round((caller.first_audio_at - caller.offer_sent_at) * 1000, 1)
        _notify(progress, {"kind": "connected", "call": index})
        gaps_before = caller.heard.gaps
        for n, step in enumerate(plan):
            if step.kind == "pause":
                await asyncio.sleep(step.seconds)
                continue
            next_step = plan[n + 1] if n + 1 < len(plan) else None
            barge_next = next_step is not None and next_step.kind == "barge_in"
            pcm, rate = clip(step.path)
            turn = await _turn(caller, step, pcm, rate, options, speech_end_offset,
                               wait_done=not barge_next)
            turn["step"] = n + 1
            turn["gaps"] = caller.heard.gaps - gaps_before
            gaps_before = caller.heard.gaps
            result["turns"].append(turn)
            _notify(progress, {"kind": "turn", "call": index, "turn": turn})
        await asyncio.sleep(options.hangup_delay_s)
        result["ok"] = True
    except CallFailed as exc:
        result["reason"] = str(exc)[:200]
    except TurnFailed as exc:
        result["reason"] = str(exc)
    except Exception as exc:  # a load test reports, it does not crash
        result["reason"] = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        result["gaps"] = caller.heard.gaps
        result["duration_s"] = round(time.monotonic() - started, 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(caller.hangup(), 10)
    _notify(progress, {"kind": "done", "call": index, "ok": result["ok"],
                       "reason": result["reason"]})
    return result


async def _turn(caller: Any, step: Step, pcm: np.ndarray, rate: int, options: LoadOptions,
                speech_end_offset: Callable[[np.ndarray, int], float], *, wait_done: bool
                ) -> dict[str, Any]:
    from rtc.caller import speech_start_offset

    turn: dict[str, Any] = {"kind": step.kind}
    idx = len(caller.events)
    if step.kind == "barge_in":
        # The previous say's answer must be playing: speak over it the moment it starts.
        await _wait(caller, "response.audio.started", idx_before(caller), "the bot never spoke "
                    "(nothing to barge in on)")
    clip_s = len(pcm) / rate
    end_offset = speech_end_offset(pcm, rate)
    start_offset = speech_start_offset(pcm, rate)
    sending = caller.mic.say(pcm, rate)
    speech_start = time.monotonic() + start_offset + 0.01  # the next 20 ms frame carries it
    sent_end = await asyncio.wait_for(sending, clip_s + 10)
    speech_end = sent_end - (clip_s - end_offset)
    if step.kind == "barge_in":
        stop = await _poll(lambda: caller.heard.silence_after(speech_start, min_frames=10), 5.0)
        if stop is None:
            raise TurnFailed("barge-in: the bot kept talking for 5 s over the caller")
        turn["barge_in_ms"] = round((stop - speech_start) * 1000, 1)
    if options.echo:
        voice = await _poll(lambda: caller.heard.first_voice_after(speech_start), 3.0)
        if voice is None:
            raise TurnFailed("echo: nothing came back within 3 s")
        turn["echo_ms"] = round((voice - speech_start) * 1000, 1)
        await asyncio.sleep(0.3)
        return turn
    await _wait(caller, "response.audio.started", idx, "no answer within "
                f"{TURN_TIMEOUT_S:.0f} s of the end of speech")
    voice = await _poll(lambda: caller.heard.first_voice_after(speech_end), 5.0)
    if voice is None:
        raise TurnFailed("response.audio.started came, but no audible bot audio")
    turn["v2v_ms"] = round((voice - speech_end) * 1000, 1)
    transcript = _event_after(caller, "transcript.final", idx)
    if transcript is not None:
        turn["transcript"] = transcript.get("text", "")
        if step.text is not None:
            from pipeline.text import word_error_rate

            turn["reference"] = step.text
            turn["wer"] = round(min(1.0, word_error_rate(step.text, turn["transcript"])), 4)
    if wait_done:
        metrics = await _wait(caller, "metrics", idx, "the answer never finished")
        turn["server"] = {k: metrics[k] for k in STAGES if k in metrics}
    return turn


def idx_before(caller: Any) -> int:
    """Index of the latest transcript.final: the answer to barge in on comes after it."""
    for i in range(len(caller.events) - 1, -1, -1):
        if caller.events[i][1].get("type") == "transcript.final":
            return i
    return 0


def _event_after(caller: Any, name: str, idx: int) -> dict[str, Any] | None:
    for _, data in caller.events[idx:]:
        if data.get("type") == name:
            return data
    return None


async def _wait(caller: Any, name: str, idx: int, why: str) -> dict[str, Any]:
    try:
        return await caller.wait_event(name, TURN_TIMEOUT_S, after=idx)
    except TimeoutError:
        error = _event_after(caller, "error", idx)
        detail = f" (server error: {error.get('code')})" if error else ""
        raise TurnFailed(f"{why}{detail}") from None


async def _poll(probe: Callable[[], float | None], timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


def _notify(progress: Callable[[dict[str, Any]], None] | None, message: dict[str, Any]) -> None:
    if progress is not None:
        with contextlib.suppress(Exception):
            progress(message)


async def run_calls(indices: Sequence[int], options: LoadOptions,
                    progress: Callable[[dict[str, Any]], None] | None = None
                    ) -> list[dict[str, Any]]:
    """Calls `indices` in this loop, each started at its slot of the ramp."""
    from rtc.ice import restrict_host_addresses

    if options.ice_hosts is not None:
        restrict_host_addresses(options.ice_hosts)
    plan = plan_steps(options.scenario, options.turns)
    t0 = time.monotonic()

    async def one(i: int) -> dict[str, Any]:
        delay = options.ramp_s * i / max(1, options.calls - 1) if options.calls > 1 else 0.0
        await asyncio.sleep(max(0.0, t0 + delay - time.monotonic()))
        return await run_call(i, options, plan, progress)

    return list(await asyncio.gather(*(one(i) for i in indices)))


def _worker(indices: list[int], options: LoadOptions, out: Any) -> None:
    """A load process: its own loop, results (JSON-able dicts) back through `out`."""
    try:
        results = asyncio.run(run_calls(indices, options, out.put))
        for result in results:
            out.put({"kind": "result", "result": result})
    except BaseException as exc:  # the parent must hear about it, not wait forever
        for i in indices:
            out.put({"kind": "result", "result": {
                "call": i, "ok": False, "turns": [], "gaps": 0, "setup_ms": None,
                "reason": f"load process crashed: {type(exc).__name__}: {exc}"[:200]}})
        traceback.print_exc()


# ---- many calls ---------------------------------------------------------------------------------


async def run_loadtest(options: LoadOptions, progress: Progress | None = None) -> dict[str, Any]:
    """The async entry point: run the load, return the report (summary + raw per-call data)."""
    if not options.scenario:
        options.scenario = await asyncio.to_thread(default_scenario)
    wall_start = time.time()
    started = time.monotonic()
    on_message = progress.update if progress else None
    procs = max(1, min(options.procs, options.calls))
    if procs == 1:
        results = await run_calls(range(options.calls), options, on_message)
    else:
        results = await asyncio.to_thread(_run_processes, options, procs, on_message)
    if progress:
        progress.finish()
    results.sort(key=lambda r: r["call"])
    return {
        "url": options.url,
        "calls": options.calls,
        "procs": procs,
        "ramp_s": options.ramp_s,
        "turns": options.turns,
        "scenario": [asdict(s) for s in options.scenario],
        "started_at": wall_start,
        "duration_s": round(time.monotonic() - started, 2),
        "summary": summarize(results),
        "results": results,
    }


def _run_processes(options: LoadOptions, procs: int,
                   on_message: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    shares = [list(range(p, options.calls, procs)) for p in range(procs)]
    workers = [ctx.Process(target=_worker, args=(share, options, out), daemon=True)
               for share in shares]
    for w in workers:
        w.start()
    results: list[dict[str, Any]] = []
    while len(results) < options.calls:
        try:
            message = out.get(timeout=1.0)
        except queue_mod.Empty:
            if not any(w.is_alive() for w in workers):
                break
            continue
        if message.get("kind") == "result":
            results.append(message["result"])
        elif on_message is not None:
            on_message(message)
    for w in workers:
        w.join(timeout=10)
    seen = {r["call"] for r in results}
    results += [{"call": i, "ok": False, "turns": [], "gaps": 0, "setup_ms": None,
                 "reason": "load process died without a result"}
                for i in range(options.calls) if i not in seen]
    return results


# ---- figures ------------------------------------------------------------------------------------


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


def add_parser(sub: Any) -> None:
    p = sub.add_parser("loadtest", help="call a server with many synthetic callers and time them")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    p.add_argument("--calls", type=int, default=1, help="number of synthetic callers")
    p.add_argument("--procs", type=int, default=1, help="load processes the callers share")
    p.add_argument("--ramp", type=float, default=0.0, metavar="SECONDS",
                   help="start the calls evenly over this many seconds")
    p.add_argument("--scenario", metavar="FILE", help="JSON or YAML steps (default: built-in "
                   "questions synthesized with the packaged Piper voice)")
    p.add_argument("--turns", type=int, metavar="K",
                   help="turns per call, repeating the scenario (default: the scenario once)")
    p.add_argument("--json", metavar="OUT", help="write the raw figures to this file")
    p.add_argument("--max-p95-ms", type=float, metavar="MS",
                   help="exit 1 when the voice-to-voice p95 is above this")
    p.add_argument("--ice-host", action="append", dest="ice_hosts", metavar="ADDRESS",
                   help="local address the callers offer as ICE candidate (default: 127.0.0.1 "
                        "for a loopback URL, otherwise every local address)")


def options_from_args(args: argparse.Namespace) -> LoadOptions:
    if args.calls < 1 or args.procs < 1 or args.ramp < 0 or (args.turns is not None
                                                             and args.turns < 1):
        raise ScenarioError("--calls, --procs and --turns must be >= 1, --ramp >= 0")
    scenario = load_scenario(args.scenario) if args.scenario else []
    return LoadOptions(url=args.url, calls=args.calls, procs=args.procs, ramp_s=args.ramp,
                       turns=args.turns, scenario=scenario, max_p95_ms=args.max_p95_ms,
                       ice_hosts=tuple(args.ice_hosts) if args.ice_hosts
                       else default_ice_hosts(args.url))


def default_ice_hosts(url: str) -> tuple[str, ...] | None:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return ("127.0.0.1",)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (str(address),) if address.is_loopback else None


def main(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except ScenarioError as exc:
        print(f"callbot loadtest: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(run_loadtest(options, Progress(options.calls)))
    print(format_summary(report, options.max_p95_ms))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return exit_code(report, options.max_p95_ms)
