"""Sight: what vision costs.

1. Added latency of a vision turn (offline OCR path), measured like a caller: one call whose
   camera shows a printed sign asks, typed, "What does the sign say?" (with `look`) and
   "How many legs does a spider have?" alternately; time from sending to the first reply
   text and to the first reply audio (caller's clock), with the server's `vision_ms`.
2. CPU per call of the bot's video track (state + captions), at 1, 4 and 8 calls:
   a. like a caller: `callbot serve` with the bot's video on and off, N callers sending a
      small camera picture and idle (the track re-sends its picture at the keep-alive rate);
      the server's CPU difference per call is the track's cost;
   b. the worst case in process: N tracks whose captions change before every frame (at the
      default 5 fps cap and at 10 fps),
      drawn and VP8-encoded with aiortc's encoder; process CPU per track.

    python3 -m bench.vision [--turns 3] [--calls 1,4,8] [--seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import numpy as np

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline import events as ev
from callbot.rtc.ice import restrict_host_addresses

from .common import RESULTS, ServerProcess, cpu_percent, proc_stats, save, table

SIGN_TEXT = ["FRESH COFFEE"]


def sign_image() -> np.ndarray:
    from support.vision_frames import sign

    return sign(SIGN_TEXT)


async def vision_latency(url: str, turns: int) -> dict[str, Any]:
    caller = SyntheticCaller(url, video_image=sign_image())
    rows: dict[str, list[dict[str, float]]] = {"vision": [], "plain": []}
    try:
        await caller.connect()
        await asyncio.sleep(2.0)
        for _ in range(turns):
            for kind, message in (
                ("vision", {"type": "input.text", "text": "What does the sign say?",
                            "look": True}),
                ("plain", {"type": "input.text", "text": "How many legs does a spider have?"}),
            ):
                start = len(caller.events)
                sent = time.monotonic()
                caller.send(message)
                await caller.wait_event("response.text.delta", 60, after=start)
                first_text = caller.event_time("response.text.delta", after=sent)
                await caller.wait_event("response.audio.started", 60, after=start)
                first_audio = caller.event_time("response.audio.started", after=sent)
                metrics = await caller.wait_event("metrics", 60, after=start)
                await caller.wait_event("response.audio.done", 60, after=start)
                assert first_text is not None and first_audio is not None
                rows[kind].append({
                    "first_text_ms": (first_text - sent) * 1000,
                    "first_audio_ms": (first_audio - sent) * 1000,
                    "vision_ms": metrics.get("vision_ms", 0.0),
                })
                await asyncio.sleep(0.5)
    finally:
        await caller.hangup()
    return rows


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


async def idle_video_calls(url: str, n: int, seconds: float, pid: int) -> dict[str, Any]:
    small = sign_image()[::4, ::4].copy()  # 160x120: the callers' camera, cheap to decode
    callers = [SyntheticCaller(url, video_image=small, keep_audio=False) for _ in range(n)]
    for c in callers:
        c.keep_bot_frames = 0
    try:
        await asyncio.gather(*(c.connect() for c in callers))
        await asyncio.sleep(2.0)
        before = proc_stats(pid, with_children=True)
        await asyncio.sleep(seconds)
        after = proc_stats(pid, with_children=True)
        frames = sum(c.bot_frames_received for c in callers)
    finally:
        await asyncio.gather(*(c.hangup() for c in callers), return_exceptions=True)
    return {"calls": n, "server_cpu_pct": cpu_percent(before, after), "bot_frames": frames}


def run_callers(bot_video: bool, steps: list[int], seconds: float) -> list[dict[str, Any]]:
    os.environ["CALLBOT_BOT_VIDEO"] = "true" if bot_video else "false"
    os.environ["CALLBOT_VISION_ENGINE"] = "none"  # only the video track is measured here
    config = RESULTS / "vision-bench.toml"  # N callers from one address: lift per-client caps
    RESULTS.mkdir(parents=True, exist_ok=True)
    config.write_text("[limits]\nmax_calls_per_client = 100\ncall_rate_per_minute = 10000\n")
    try:
        with ServerProcess(extra=["--config", str(config)]) as server:
            out = []
            for n in steps:
                row = asyncio.run(idle_video_calls(server.url, n, seconds, server.pid))
                row["bot_video"] = bot_video
                out.append(row)
                time.sleep(1.0)
            return out
    finally:
        os.environ.pop("CALLBOT_BOT_VIDEO", None)
        os.environ.pop("CALLBOT_VISION_ENGINE", None)


def worst_case_tracks(n: int, seconds: float, fps: float, change: bool = True
                      ) -> dict[str, Any]:
    """N tracks, captions changing before every frame (or never: keep-alive only)."""
    from aiortc.codecs.vpx import Vp8Encoder

    from callbot.rtc.bot_video import BotVideoTrack
    from callbot.signalling.calls.sight import show_event

    async def one(track: BotVideoTrack, encoder: Vp8Encoder, stop: float) -> int:
        i = 0
        while time.monotonic() < stop:
            if change:
                show_event(track.board, ev.ResponseTextDelta(delta=f" word{i}", turn_id=1))
            frame = await track.recv()
            encoder.encode(frame)
            i += 1
        return i

    async def run() -> tuple[int, dict[str, float], dict[str, float]]:
        tracks = [BotVideoTrack(fps=fps) for _ in range(n)]
        encoders = [Vp8Encoder() for _ in range(n)]
        for t in tracks:
            show_event(t.board, ev.BotState(state="speaking"))
        before = proc_stats(os.getpid())
        stop = time.monotonic() + seconds
        counts = await asyncio.gather(*(one(t, e, stop) for t, e in zip(tracks, encoders,
                                                                         strict=True)))
        after = proc_stats(os.getpid())
        for t in tracks:
            t.stop()
        return sum(counts), before, after

    frames, before, after = asyncio.run(run())
    cpu = cpu_percent(before, after)
    return {"tracks": n, "fps_cap": fps, "changing": change,
            "fps_per_track": frames / n / seconds, "cpu_pct": cpu, "cpu_pct_per_track": cpu / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--calls", default="1,4,8")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--only-tracks", action="store_true",
                        help="only the in-process track figures (idle and worst case)")
    args = parser.parse_args()
    restrict_host_addresses(["127.0.0.1"])  # the callers offer loopback candidates only
    steps = [int(s) for s in args.calls.split(",")]
    result: dict[str, Any] = {}

    if not (args.skip_latency or args.only_tracks):
        with ServerProcess() as server:  # the default: offline vision
            rows = asyncio.run(vision_latency(server.url, args.turns))
        result["latency"] = rows
        print("\nVision turn vs plain turn (typed, ms from sending, caller's clock):")
        print(table(["turn", "n", "first text p50", "first audio p50", "vision_ms p50"], [
            [kind, len(r), _median(r, "first_text_ms"), _median(r, "first_audio_ms"),
             _median(r, "vision_ms")] for kind, r in rows.items()]))
        added = (_median(rows["vision"], "first_audio_ms")
                 - _median(rows["plain"], "first_audio_ms"))
        print(f"added latency to first audio (p50): {added:.0f} ms")
        result["added_first_audio_ms_p50"] = added

    worst = [worst_case_tracks(n, args.seconds / 2, fps) for fps in (5.0, 10.0) for n in steps]
    result["worst_case"] = worst
    print("\nBot video worst case in process (captions change before every frame):")
    print(table(["fps cap", "tracks", "fps/track", "CPU %", "CPU %/track"],
                [[w["fps_cap"], w["tracks"], w["fps_per_track"], w["cpu_pct"],
                  w["cpu_pct_per_track"]] for w in worst]))
    idle = [worst_case_tracks(n, args.seconds, 5.0, change=False) for n in steps]
    result["idle_in_process"] = idle
    print("\nBot video idle in process (nothing changes: keep-alive repeats only):")
    print(table(["tracks", "fps/track", "CPU %", "CPU %/track"],
                [[w["tracks"], w["fps_per_track"], w["cpu_pct"], w["cpu_pct_per_track"]]
                 for w in idle]))
    if args.only_tracks:
        save("vision-tracks", result)
        return

    on = run_callers(True, steps, args.seconds)
    off = run_callers(False, steps, args.seconds)
    rows_b = []
    for a, b in zip(on, off, strict=True):
        per_call = (a["server_cpu_pct"] - b["server_cpu_pct"]) / a["calls"]
        rows_b.append([a["calls"], b["server_cpu_pct"], a["server_cpu_pct"], per_call,
                       a["bot_frames"] / a["calls"] / args.seconds])
    result["callers"] = {"on": on, "off": off}
    print("\nBot video, idle calls (callers send a 160x120 camera picture), server CPU %:")
    print(table(["calls", "video off", "video on", "per call", "bot fps/call"], rows_b))

    save("vision", result)


if __name__ == "__main__":
    main()
