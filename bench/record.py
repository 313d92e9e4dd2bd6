"""The call record's cost: voice-to-voice latency with recording and tracing on vs off (same-run
A/B, rounds interleaved), and the recorder's memory over a long call.

    python3 -m bench.record [--rounds 2] [--turns 8] [--soak-minutes 30]

"on": `[record] keep = true, audio = true` (a stereo WAV per call, SQLite) and traces to an
OTLP/HTTP receiver this script runs (OTEL_EXPORTER_OTLP_ENDPOINT); "off": the defaults. Each
variant is its own `callbot serve` process; one call each per round, the built-in Piper
questions. The soak feeds a recorder (transcript + stereo WAV + trace) 30 minutes of a call's
audio and events as fast as it can and samples Python's traced memory (tracemalloc) and the
WAV's size as it goes: flat memory means the recording is on disk, not in RAM.
"""

from __future__ import annotations

import argparse
import http.server
import os
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from callbot import loadtest

from .common import ServerProcess, save, table
from .latency import run_call


class _Receiver(http.server.BaseHTTPRequestHandler):
    posts = 0
    bytes_in = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        type(self).posts += 1
        type(self).bytes_in += length
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def latency_ab(rounds: int, turns: int) -> dict[str, Any]:
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    store = Path(tempfile.mkdtemp(prefix="callbot-record-bench-"))
    on = (f'[record]\nkeep = true\naudio = true\ndb = "{store}/records.sqlite"\n'
          f'audio_dir = "{store}/wav"\n')
    variants = {"off": "", "on": on}
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants.items())
        for name, toml in (order if r % 2 == 0 else order[::-1]):  # neither always goes first
            if name == "on":
                os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
                os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "1000"
            try:
                with ServerProcess(toml=toml) as server:
                    report = run_call(server.url, turns, 0)
            finally:
                os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
                os.environ.pop("OTEL_BSP_SCHEDULE_DELAY", None)
            result = report["results"][0]
            done = [t for t in result["turns"] if "v2v_ms" in t]
            got[name].extend(done)
            print(f"round {r + 1} {name}: ok={result['ok']} v2v p50 "
                  f"{np.median([t['v2v_ms'] for t in done]) if done else float('nan'):.0f} ms",
                  flush=True)
    receiver.shutdown()
    rows = []
    for name, done in got.items():
        v2v = [t["v2v_ms"] for t in done]
        row: list[Any] = [name, len(v2v), round(float(np.median(v2v)), 1),
                          round(float(np.percentile(v2v, 95)), 1)]
        for stage in loadtest.STAGES:
            values = [t["server"][stage] for t in done if t.get("server", {}).get(stage)]
            row.append(round(float(np.median(values)), 1) if values else None)
        rows.append(row)
    print(table(["variant", "turns", "v2v p50", "v2v p95", *loadtest.STAGES], rows))
    wavs = sorted((store / "wav").glob("*.wav"))
    print(f"OTLP posts received: {_Receiver.posts} ({_Receiver.bytes_in} bytes); "
          f"recordings: {len(wavs)}")
    return {"rounds": rounds, "turns": got, "table": rows, "otlp_posts": _Receiver.posts,
            "recordings": len(wavs)}


def soak(minutes: float, speed: float) -> dict[str, Any]:
    """A recorder fed `minutes` of a call at `speed` times real time: caller frames always, the
    bot speaking 4 s of every 10 (48 kHz frames, as the WebRTC track sends them), a turn's
    events every 10 s. (Much faster than `speed` 100 outruns the disk writer on purpose: audio
    is dropped, memory stays bounded by `record.max_backlog_s`.)"""
    from callbot.pipeline import events as ev
    from callbot.signalling.records.transcript import Transcript
    from callbot.signalling.records.wav import StereoRecording

    out = Path(tempfile.mkdtemp(prefix="callbot-soak-")) / "soak.wav"
    clock = [0.0]
    transcript = Transcript("soak", 0.0, clock=lambda: clock[0])
    recording = StereoRecording(out)
    caller = (np.random.default_rng(0).standard_normal(320) * 3000).astype(np.int16)
    bot = (np.random.default_rng(1).standard_normal(960) * 3000).astype(np.int16)
    tracemalloc.start()
    samples = []
    frames = int(minutes * 60 * 50)
    started = time.perf_counter()
    for i in range(frames):
        at = i * 0.02
        clock[0] = at
        recording.caller(caller, at)
        phase = at % 10
        if phase < 4:
            recording.bot(bot, 48_000, at)
        if i % 500 == 0:  # every 10 s a turn
            turn = i // 500
            transcript.on_event(ev.TranscriptFinal(text="a question " * 5, turn_id=turn))
            transcript.on_event(ev.ResponseTextDelta(delta="an answer " * 20, turn_id=turn))
            transcript.on_event(ev.TurnMetrics(turn_id=turn, asr_ms=100.0,
                                               first_audio_ms=600.0))
        if i % 50 == 0:  # each second of call: keep to `speed` times real time
            ahead = at / speed - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
        if i % (60 * 50) == 0 or i == frames - 1:
            current, _ = tracemalloc.get_traced_memory()
            samples.append({"minute": round(at / 60, 1), "traced_kb": round(current / 1024),
                            "wav_mb": round(out.stat().st_size / 2**20, 1)
                            if out.exists() else 0.0})
    recording.close(frames * 0.02)
    recording.wait_written()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    elapsed = time.perf_counter() - started
    print(table(["minute", "traced KB", "wav MB"],
                [[s["minute"], s["traced_kb"], s["wav_mb"]] for s in samples]))
    print(f"{minutes} min in {elapsed:.1f} s ({speed}x real time); "
          f"dropped {recording.dropped_s:.1f} s; "
          f"peak traced {peak / 1024:.0f} KB; transcript turns {len(transcript.turns)}")
    out.unlink()
    return {"minutes": minutes, "speed": speed, "samples": samples,
            "peak_kb": round(peak / 1024), "dropped_s": recording.dropped_s,
            "transcript_turns": len(transcript.turns)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--soak-minutes", type=float, default=30.0)
    parser.add_argument("--soak-speed", type=float, default=30.0,
                        help="times real time (30: 30 minutes in a minute)")
    parser.add_argument("--no-calls", action="store_true", help="the soak only")
    args = parser.parse_args()
    data: dict[str, Any] = ({"soak": soak(args.soak_minutes, args.soak_speed)}
                            if args.soak_minutes > 0 else {})
    if not args.no_calls:
        data["latency_ab"] = latency_ab(args.rounds, args.turns)
    save("record", data)


if __name__ == "__main__":
    main()
