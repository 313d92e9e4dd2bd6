"""`callbot loadtest`: many synthetic callers against one server, timed from the caller's side.

Each caller is a real aiortc peer (`rtc.caller.SyntheticCaller`) that follows a scenario:

    [{"say": "question.wav", "text": "how many legs does a spider have"},
     {"pause": 1.0},
     {"barge_in": "interrupt.wav", "text": "stop"}]

`say` speaks a clip and waits for the bot's answer; `barge_in` speaks over the bot right after
its answer to the previous `say` starts playing; `backchannel` ("mm-hmm") does the same but
expects the bot to go on (`backchannel_ok`: no response.interrupted and its voice again).
Paths are relative to the scenario file. With no scenario, questions are synthesized once with
the Piper voice shipped in our dependencies.

Figures, per turn, on the caller's clock: voice-to-voice (end of the caller's speech -> first
loud bot audio), barge-in reaction (caller starts speaking over the bot -> bot audio stops),
call set-up (offer sent -> first audio frame received), gaps (> 60 ms between received frames),
and the word error rate of the server's `transcript.final` against the step's `text`.

Callers are spread over `--procs` processes, each with its own asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue as queue_mod
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .report import STAGES, Progress, summarize
from .scenario import (
    TURN_TIMEOUT_S,
    LoadOptions,
    Step,
    default_scenario,
    plan_steps,
    read_wav,
)

# After a barge-in, bot audio again within this time was a pause between its sentences.
RESUMED_WITHIN_S = 1.0


class TurnFailed(RuntimeError):
    pass


async def run_call(index: int, options: LoadOptions, plan: Sequence[Step],
                   progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One synthetic call through the plan; a JSON-able result, never an exception."""
    from callbot.loadtest.caller import CallFailed, SyntheticCaller, speech_end_offset

    result: dict[str, Any] = {"call": index, "ok": False, "reason": None, "setup_ms": None,
                              "turns": [], "gaps": 0, "call_id": None}
    started = time.monotonic()
    caller = SyntheticCaller(options.url, keep_audio=False,
                             headers=dict(options.headers) or None)
    if options.echo_db is not None:
        caller.mic.echo_gain = 10 ** (options.echo_db / 20)
        caller.mic.echo_delay_s = options.echo_delay_ms / 1000
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
            barge_next = next_step is not None and next_step.kind in ("barge_in", "backchannel")
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
    from callbot.loadtest.caller import speech_start_offset

    turn: dict[str, Any] = {"kind": step.kind}
    idx = len(caller.events)
    over_bot = step.kind in ("barge_in", "backchannel")
    if over_bot:
        # The previous say's answer must be playing: speak over it the moment it starts.
        started = await _wait(caller, "response.audio.started", idx_before(caller),
                              "the bot never spoke (nothing to barge in on)")
        # ...once the caller hears it (the event outruns the audio's jitter buffer).
        heard_from = _arrival(caller, started)
        if await _poll(lambda: caller.heard.first_voice_after(heard_from), 3.0) is None:
            raise TurnFailed("barge-in: response.audio.started came, but no audible bot audio")
    clip_s = len(pcm) / rate
    end_offset = speech_end_offset(pcm, rate)
    start_offset = speech_start_offset(pcm, rate)
    sending = caller.mic.say(pcm, rate)
    speech_start = time.monotonic() + start_offset + 0.01  # the next 20 ms frame carries it
    sent_end = await asyncio.wait_for(sending, clip_s + 10)
    speech_end = sent_end - (clip_s - end_offset)
    if step.kind == "barge_in":
        stop = await _bot_stopped(caller, speech_start)
        if stop is None:
            raise TurnFailed("barge-in: the bot kept talking for 5 s over the caller")
        if _event_after(caller, "response.interrupted", idx) is not None:
            turn["barge_in_ms"] = round((stop - speech_start) * 1000, 1)
        else:  # a short reply ended by itself before the caller's first word: not a figure
            turn["barge_in_missed"] = "the reply ended before the caller spoke"
    if step.kind == "backchannel":
        # The bot must go on: its voice again after the caller's "mm-hmm", no interruption.
        again = await _poll(lambda: caller.heard.first_voice_after(sent_end), 3.0)
        interrupted = _event_after(caller, "response.interrupted", idx)
        turn["backchannel_ok"] = again is not None and interrupted is None
        if wait_done and interrupted is None:
            await _wait(caller, "metrics", idx, "the answer never finished")
        return turn
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
            from callbot.pipeline.text import word_error_rate

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
            found: dict[str, Any] = data
            return found
    return None


async def _wait(caller: Any, name: str, idx: int, why: str) -> dict[str, Any]:
    try:
        event: dict[str, Any] = await caller.wait_event(name, TURN_TIMEOUT_S, after=idx)
        return event
    except TimeoutError:
        error = _event_after(caller, "error", idx)
        detail = f" (server error: {error.get('code')})" if error else ""
        raise TurnFailed(f"{why}{detail}") from None


async def _bot_stopped(caller: Any, since: float) -> float | None:
    """When the bot's voice stopped for good after `since`: a pause between two of its
    sentences (a silent run, then its voice again within a second) is not the stop."""
    deadline = time.monotonic() + 5.0
    start = since

    def silence() -> float | None:
        found: float | None = caller.heard.silence_after(start, min_frames=10)
        return found

    while (stop := await _poll(silence, deadline - time.monotonic())) is not None:
        await asyncio.sleep(max(0.0, stop + RESUMED_WITHIN_S - time.monotonic()))
        again = caller.heard.first_voice_after(stop)
        if again is None or again > stop + RESUMED_WITHIN_S:
            return stop
        start = again
    return None


def _arrival(caller: Any, event: dict[str, Any]) -> float:
    """When the caller received `event` (monotonic), or now if it is not found."""
    for arrived, data in reversed(caller.events):
        if data is event:
            return float(arrived)
    return time.monotonic()


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
    from callbot.rtc.ice import restrict_host_addresses

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

