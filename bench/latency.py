"""One call, the same questions asked again and again: voice-to-voice p50/p95 (caller's clock)
with the server's per-stage breakdown (its `metrics` events), then streaming ASR vs one-shot:
the final decode the live call did after speech ended (server asr_ms) against our recognizer
and plain faster-whisper `WhisperModel.transcribe` on the same question audio, offline.

    python3 -m bench.latency [--turns 9] [--voices 3] [--url http://127.0.0.1:8080]

A/B against a baseline configuration, rounds interleaved so both see the same machine:

    python3 -m bench.latency --turns 12 --voices 0 --rounds 2 --baseline "$(printf \
      '[engines]\nllm_isolation = "thread"\n[turn.endpointing]\nneural_vad = false\n')"
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import numpy as np

from callbot import loadtest

from .asr import ours, plain_transcribe
from .common import ServerProcess, refusals, save, table, voice_scenario


def run_call(url: str, turns: int, voices: int = 3) -> dict[str, Any]:
    """One call; the questions of `voice_scenario` (three questions, each in `voices` voices),
    or the built-in Piper questions with voices=0."""
    if voices:
        steps = voice_scenario(voices)
    else:
        steps = [s for s in loadtest.default_scenario() if s.kind != "barge_in"]
    steps.append(loadtest.Step("pause", seconds=0.5))
    options = loadtest.LoadOptions(url=url, calls=1, procs=1, turns=turns, scenario=steps,
                                   ice_hosts=loadtest.default_ice_hosts(url))
    return asyncio.run(loadtest.run_loadtest(options))


def asr_compare(steps: list[loadtest.Step], repeat: int) -> list[dict[str, Any]]:
    from callbot.pipeline.asr.whisper import FasterWhisperRecognizer
    from callbot.rtc.resample import resample_pcm

    rec = FasterWhisperRecognizer("tiny.en")
    rows = []
    try:
        for step in steps:
            pcm, rate = loadtest.read_wav(step.path)
            pcm = resample_pcm(pcm, rate, 16_000)
            for name, fn in (("ours", lambda p: ours(rec, p)),
                             ("plain", lambda p: plain_transcribe(rec, p, 1))):
                fn(pcm)
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    text = fn(pcm)
                    times.append((time.perf_counter() - started) * 1000)
                rows.append({"clip": step.text, "engine": name, "median_ms":
                             round(float(np.median(times)), 1), "text": text})
    finally:
        rec.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=9)
    parser.add_argument("--voices", type=int, default=3,
                        help="voices per question (Piper + espeak-ng); 0: built-in Piper clips")
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", metavar="TOML",
                        help="A/B: also run a server with these extra settings")
    parser.add_argument("--rounds", type=int, default=1, help="A/B rounds (interleaved)")
    args = parser.parse_args()
    if args.baseline is not None:
        return compare(args)
    if args.url:
        report = run_call(args.url, args.turns, args.voices)
    else:
        with ServerProcess() as server:
            report = run_call(server.url, args.turns, args.voices)
    result = report["results"][0]
    if not result["ok"]:
        print(f"the call failed: {result['reason']} (refused at set-up: {refusals(report)})")
    f = report["summary"]["figures"]
    names = ["v2v_ms"] + [f"server.{s}" for s in loadtest.STAGES]
    print(f"one call, {len(result['turns'])} turns")
    print(table(["figure", "n", "p50", "p95", "max"],
                [[n, f[n]["n"], f[n]["p50"], f[n]["p95"], f[n]["max"]] for n in names if n in f]))
    steps = [s for s in report_steps(report) if s.kind == "say"]
    rows = asr_compare(steps, args.repeat)
    print("\nASR on the question audio (offline, server stopped); live call's final decode "
          f"after speech end: p50 {f.get('server.asr_ms', {}).get('p50')} ms")
    print(table(["clip", "engine", "median ms", "text"],
                [[r["clip"], r["engine"], r["median_ms"], r["text"]] for r in rows]))
    save("latency", {"report": report, "asr": rows})


def compare(args: argparse.Namespace) -> None:
    """Rounds of (current settings, baseline settings), one server each, same questions."""
    variants = {"current": "", "baseline": args.baseline}
    turns: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, toml in variants.items():
            with ServerProcess(toml=toml) as server:
                report = run_call(server.url, args.turns, args.voices)
            result = report["results"][0]
            if not result["ok"]:
                print(f"round {r + 1} {name}: the call failed: {result['reason']}")
            got = [t for t in result["turns"] if "v2v_ms" in t]
            turns[name].extend(got)
            print(f"round {r + 1} {name}: v2v p50 "
                  f"{np.median([t['v2v_ms'] for t in got]) if got else None:.0f} ms", flush=True)
    rows = []
    for name, got in turns.items():
        v2v = [t["v2v_ms"] for t in got]
        row: list[Any] = [name, len(v2v), round(float(np.median(v2v)), 1),
                          round(float(np.percentile(v2v, 95)), 1)]
        for stage in loadtest.STAGES:
            values = [t["server"][stage] for t in got if t.get("server", {}).get(stage)]
            row.append(round(float(np.median(values)), 1) if values else None)
        rows.append(row)
    print(table(["variant", "turns", "v2v p50", "v2v p95", *loadtest.STAGES], rows))
    save("latency-ab", {"baseline_toml": args.baseline, "rounds": args.rounds, "turns": turns,
                        "table": rows})


def report_steps(report: dict[str, Any]) -> list[loadtest.Step]:
    seen, steps = set(), []
    for raw in report["scenario"]:
        step = loadtest.Step(**raw)
        if step.path and step.path not in seen:
            seen.add(step.path)
            steps.append(step)
    return steps


if __name__ == "__main__":
    main()
