"""Echo, backchannels and barge-in, as a speakerphone caller gets them: real `callbot serve`
processes (the default: echo handling on, adaptive; off and AEC3-always for the A/B), aiortc
callers whose microphone plays the bot's voice back (`MicrophoneTrack.echo_gain`, `echo_delay_s`).

    python3 -m bench.echo [--trials 1] [--barges 3] [--quick] [--variants before,default]

Figures: self-interruption (a long reply cut by its own echo within `WATCH_S`) at -20/-10/-6
dB and 50-250 ms; backchannels ("Yeah.", "Mm-hmm.", "Okay.") said over a reply that do not
stop it; barge-in ("Wait, stop please.") from the caller's first word to 200 ms of silence in
the bot's audio at the caller, clean and over echo; AEC3's CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import numpy as np

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.echo import EchoCanceller
from callbot.rtc.ice import restrict_host_addresses
from support import speech

from .common import ServerProcess, save, table

LONG_ASK = "Tell me a long story about a brave dragon who lives in a castle by the sea."
WATCH_S = 8.0  # a reply not cut within this much playback passes
BACKCHANNELS = ("Yeah.", "Mm-hmm.", "Okay.")


async def _call(url: str, db: float | None, delay_ms: float) -> SyntheticCaller:
    caller = SyntheticCaller(url, keep_audio=False)
    if db is not None:
        caller.mic.echo_gain = 10 ** (db / 20)
        caller.mic.echo_delay_s = delay_ms / 1000
    await caller.connect()
    caller.send({"type": "input.text", "text": LONG_ASK})
    await caller.wait_event("response.audio.started", timeout=60)
    return caller


async def self_interrupts(url: str, db: float, delay_ms: float) -> dict[str, Any]:
    """Does a long reply stop itself within WATCH_S over this echo? (and what it heard)"""
    try:
        caller = await _call(url, db, delay_ms)
    except Exception as exc:  # the busy machine's LLM timed out: not a figure
        return {"cut": None, "error": repr(exc)[:120]}
    try:
        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            if caller.events_of("response.interrupted"):
                await asyncio.sleep(2.0)
                heard = [e["text"] for e in caller.events_of("transcript.final")[1:]]
                return {"cut": True, "heard": heard}
            if caller.events_of("response.audio.done"):
                break
            await asyncio.sleep(0.05)
        return {"cut": False}
    finally:
        await caller.hangup()


async def backchannel(url: str, text: str, db: float | None) -> bool | None:
    try:
        caller = await _call(url, db, 120)
    except Exception:  # the busy machine's LLM timed out: not a figure
        return None
    try:
        await asyncio.sleep(1.5)
        clip = speech.espeak(text, 48_000)
        sent = await caller.mic.say(clip.pcm, clip.rate)
        await asyncio.sleep(2.5)
        again = caller.heard.first_voice_after(sent)
        return again is not None and not caller.events_of("response.interrupted")
    finally:
        await caller.hangup()


async def barge_in(url: str, db: float | None) -> float | None:
    """ms from the caller's first word to the bot's silence, heard at the caller."""
    try:
        caller = await _call(url, db, 120)
    except Exception:
        return None
    try:
        await asyncio.sleep(1.5)
        clip = speech.espeak("Wait, stop please.", 48_000)
        t_speech = time.monotonic()
        await caller.mic.say(clip.pcm, clip.rate)
        try:
            await caller.wait_event("response.interrupted", timeout=8)
        except TimeoutError:
            return None
        stop = caller.heard.silence_after(t_speech, min_frames=10)
        return None if stop is None else round((stop - t_speech) * 1000, 1)
    finally:
        await caller.hangup()


def aec_cpu() -> dict[str, float]:
    """AEC3's own cost: 20 s of a -10 dB, 120 ms echo through one canceller."""
    bot = speech.espeak("Spiders have eight legs and many eyes. " * 6, 16_000).pcm
    echo = np.zeros_like(bot)
    echo[1920:] = (bot[:-1920] * 0.316).astype(np.int16)
    aec = EchoCanceller(adaptive=False)  # AEC3 alone; adaptive adds a look every 200 ms
    for i in range(0, len(bot) - 319, 320):
        aec.far(bot[i:i + 320])
        aec.near(echo[i:i + 320])
    per_frame_ms = aec.cpu_s / aec.frames * 1000
    return {"ms_per_20ms_frame": round(per_frame_ms, 3),
            "core_percent_per_call": round(per_frame_ms / 20 * 100, 2)}


# Same-run A/B: the default before this round (echo cancellation off), AEC3's output always
# (the first attempt), and today's default (on, adaptive).
VARIANTS = (("before: echo off", "[turn.echo]\nenabled = false\n"),
            ("AEC3 always", "[turn.echo]\nadaptive = false\n"),
            ("default: adaptive", ""))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    restrict_host_addresses(("127.0.0.1",))  # loopback ICE, like the load test
    levels = (-10.0,) if args.quick else (-20.0, -10.0, -6.0)
    delays = (120.0,) if args.quick else (50.0, 250.0)
    out: dict[str, Any] = {"self_interruption": [], "backchannel": [], "barge_in": {}}
    for name, toml in VARIANTS:
        if args.variants and not any(v in name for v in args.variants.split(",")):
            continue
        default = name.startswith("default")
        with ServerProcess(toml=toml) as server:
            for db in levels if default else (-10.0,):
                for delay in delays:
                    runs = [await self_interrupts(server.url, db, delay)
                            for _ in range(args.trials)]
                    cut = [r["cut"] for r in runs if r["cut"] is not None]
                    out["self_interruption"].append(
                        {"server": name, "db": db, "delay_ms": delay, "cut": sum(cut),
                         "calls": len(cut), "runs": runs})
                    print(name, db, delay, cut, runs, flush=True)
            if default:
                for text in BACKCHANNELS:
                    for db in (None, -10.0):
                        for _ in range(args.trials):
                            ok = await backchannel(server.url, text, db)
                            out["backchannel"].append({"text": text, "echo_db": db, "ok": ok})
                            print("backchannel", text, db, ok, flush=True)
            for db in ((None, -10.0) if default else (None,)):
                key = f"{name}/{'clean' if db is None else 'echo -10 dB 120 ms'}"
                out["barge_in"][key] = [await barge_in(server.url, db)
                                        for _ in range(args.barges)]
                print("barge-in", key, out["barge_in"][key], flush=True)
    out["aec_cpu"] = aec_cpu()
    return out


def report(out: dict[str, Any]) -> str:
    rows = [[r["server"], r["db"], r["delay_ms"], f"{r['cut']}/{r['calls']}",
             "; ".join(str(x.get("heard", "")) for x in r["runs"] if x.get("cut"))]
            for r in out["self_interruption"]]
    text = "Self-interruption (long reply cut by its own echo within 8 s)\n"
    text += table(["server", "echo dB", "delay ms", "cut", "heard"], rows)
    bc = out["backchannel"]
    done = [b for b in bc if b["ok"] is not None]
    text += f"\n\nBackchannels that did not stop the bot: {sum(b['ok'] for b in done)}/{len(done)}"
    rows = []
    for key, values in out["barge_in"].items():
        got = [v for v in values if v is not None]
        rows.append([key, statistics.median(got) if got else None, f"{len(got)}/{len(values)}",
                     str(values)])
    text += "\n\nBarge-in heard at the caller (ms)\n"
    text += table(["server/caller", "median", "stopped", "all"], rows)
    text += f"\n\nAEC3 CPU per call: {out['aec_cpu']}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--barges", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variants", default="", help="comma-separated parts of names to run")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    print(report(out))
    save("echo", {"args": vars(args), **out})


if __name__ == "__main__":
    main()
