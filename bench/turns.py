"""Turn-taking quality on the committed set (`bench/turnset/`): premature replies and
end-of-turn delay, per end-of-turn policy.

Every utterance is fed through a real `VoiceSession` in real time (20 ms frames at wall-clock
pace; the speculation logic depends on it): real webrtcvad, real Whisper (tiny.en), the real
Smart Turn model; the LLM and TTS are the scripted fakes of `pipeline/fakes.py` with timings
like the real ones (first token 90 ms, first audio 110 ms), which do not change when a turn
ends. Policies are interleaved utterance by utterance, so they share the machine's load.

Per utterance and policy:
- premature: a turn was committed (the caller's words published and answered) before the
  utterance really ended (`speech_end_s` in the manifest);
- end-of-turn delay: from the real end to the commit of the finished turn;
- reply delay: from the real end to the first reply audio queued (late if > 1 s or never).

    python3 -m bench.turns [--policies transcript,smart_turn] [--only mid-,short-]

A policy name may carry variants: `/nogate` (the segmenter's energy gate off: speech ends
where webrtcvad's hangover ends), `/webrtc` (webrtcvad alone, no Silero confirmation),
e.g. `--policies smart_turn,smart_turn/webrtc/nogate` for today's default against the old.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callbot.pipeline import events as ev
from callbot.pipeline.audio import FRAME_SAMPLES, PIPELINE_RATE
from callbot.pipeline.engines import Engines
from callbot.pipeline.fakes import MemoryOutput, ScriptedLLM, ScriptedTTS
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.settings import EndpointingSettings, TurnSettings
from callbot.pipeline.turn_policy import (
    POLICIES,
    EndOfTurnPolicy,
    SmartTurnPolicy,
    TranscriptRule,
    TurnModel,
)

from .common import save, table
from .turnset.make import HERE as SET_DIR
from .turnset.make import noise

FRAME_S = FRAME_SAMPLES / PIPELINE_RATE
TAIL_S = 1.8  # audio fed after the real end: more than the longest wait (1200 ms) + a reply
LATE_S = 1.0


def load_set() -> list[dict[str, Any]]:
    manifest = json.loads((SET_DIR / "manifest.json").read_text())
    items: list[dict[str, Any]] = manifest["utterances"]
    for item in items:
        raw = subprocess.run(["sox", str(SET_DIR / item["file"]), "-t", "raw", "-e", "signed",
                              "-b", "16", "-"], check=True, capture_output=True).stdout
        pcm = np.frombuffer(raw, dtype=np.int16)
        # continue the recorded noise (same kind and level) past the file's end
        extra = int((item["speech_end_s"] + TAIL_S) * PIPELINE_RATE) - len(pcm)
        if extra > 0:
            tail = item["noise_rms"] * noise(item["noise"], extra, item["noise_seed"] + 1)
            pcm = np.concatenate([pcm, np.round(tail).astype(np.int16)])
        item["pcm"] = pcm
    return items


class Recording:
    """Wraps a policy: keeps each distinct verdict (time, transcript, audio p, silence asked)."""

    def __init__(self, inner: EndOfTurnPolicy, clock: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.uses_audio = inner.uses_audio
        self.clock = clock
        self.log: list[dict[str, Any]] = []

    async def judge_audio(self, audio: np.ndarray) -> float | None:
        started = time.perf_counter()
        p = await self.inner.judge_audio(audio)
        self.log.append({"t": round(self.clock(), 3), "audio_p": p, "audio_s":
                         round(len(audio) / PIPELINE_RATE, 2),
                         "judge_ms": round((time.perf_counter() - started) * 1000, 1)})
        return p

    def required_silence_ms(self, transcript: str | None, audio_complete: float | None) -> int:
        needed = self.inner.required_silence_ms(transcript, audio_complete)
        key = (transcript, audio_complete, needed)
        if not self.log or self.log[-1].get("key") != key:
            self.log.append({"t": round(self.clock(), 3), "key": key, "transcript": transcript,
                             "audio_p": audio_complete, "needed_ms": needed})
        return needed


@dataclass
class Outcome:
    id: str
    category: str
    policy: str
    speech_end_s: float
    premature: bool = False
    premature_text: str | None = None
    eot_delay_ms: float | None = None
    reply_delay_ms: float | None = None
    late: bool = False
    transcript: str | None = None
    events: list[tuple[float, str, str]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)


async def run_one(item: dict[str, Any], engines: Engines, policy: EndOfTurnPolicy,
                  settings: TurnSettings) -> Outcome:
    pcm: np.ndarray = item["pcm"]
    t0 = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - t0

    log: list[tuple[float, ev.Event]] = []
    recording = Recording(policy, clock)
    session = VoiceSession(engines, output=MemoryOutput(realtime=True),
                           emit=lambda e: log.append((clock(), e)), settings=settings,
                           policy=recording)
    end = item["speech_end_s"]
    n_frames = int((end + TAIL_S) / FRAME_S)
    try:
        for i in range(n_frames):
            due = t0 + i * FRAME_S
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            session.feed(pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])
            t = (i + 1) * FRAME_S
            if t > end + 0.2 and any(
                    e.type == "response.audio.started" and at >= end for at, e in log):
                break
        await asyncio.sleep(0.2)
    finally:
        await session.close()
    return judge(item, policy.name, log, recording.log)


def judge(item: dict[str, Any], policy: str, log: list[tuple[float, ev.Event]],
          verdicts: list[dict[str, Any]]) -> Outcome:
    end = item["speech_end_s"]
    out = Outcome(item["id"], item["category"], policy, end, verdicts=[
        {k: v for k, v in x.items() if k != "key"} for x in verdicts])
    last_stop: float | None = None
    for at, event in log:
        f = event.fields()
        out.events.append((round(at, 3), event.type, str(f.get("text", f.get("state", "")))))
        if event.type == "vad.speech_stopped":
            last_stop = at
        elif event.type == "transcript.final" and last_stop is not None and f["text"].strip():
            if last_stop < end:
                if not out.premature:
                    out.premature, out.premature_text = True, f["text"]
            elif out.eot_delay_ms is None:
                out.eot_delay_ms = round((last_stop - end) * 1000, 1)
                out.transcript = f["text"]
        elif event.type == "response.audio.started" and at >= end and out.reply_delay_ms is None:
            out.reply_delay_ms = round((at - end) * 1000, 1)
    out.late = out.reply_delay_ms is None or out.reply_delay_ms > LATE_S * 1000
    return out


def build_policy(name: str, settings: EndpointingSettings, model: TurnModel | None
                 ) -> EndOfTurnPolicy:
    if name == "transcript":
        return TranscriptRule(settings)
    assert model is not None
    return SmartTurnPolicy(model, settings, audio_only=name == "smart_turn_only")


def summarize(outcomes: list[Outcome], policy: str) -> dict[str, Any]:
    mine = [o for o in outcomes if o.policy == policy]
    finished_eot = [o.eot_delay_ms for o in mine if o.eot_delay_ms is not None]
    replies = [o.reply_delay_ms for o in mine if o.reply_delay_ms is not None]

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values else None

    return {
        "policy": policy, "utterances": len(mine),
        "premature": sum(o.premature for o in mine),
        "premature_rate": round(sum(o.premature for o in mine) / max(1, len(mine)), 3),
        "late": sum(o.late for o in mine),
        "late_rate": round(sum(o.late for o in mine) / max(1, len(mine)), 3),
        "eot_delay_p50_ms": pct(finished_eot, 50), "eot_delay_p90_ms": pct(finished_eot, 90),
        "reply_delay_p50_ms": pct(replies, 50), "reply_delay_p90_ms": pct(replies, 90),
        "no_reply": sum(o.reply_delay_ms is None for o in mine),
        "by_category": {c: {"n": sum(o.category == c for o in mine),
                            "premature": sum(o.premature for o in mine if o.category == c),
                            "late": sum(o.late for o in mine if o.category == c)}
                        for c in sorted({o.category for o in mine})},
        "premature_ids": [o.id for o in mine if o.premature],
        "late_ids": [o.id for o in mine if o.late],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from callbot.pipeline.asr.whisper import FasterWhisperRecognizer
    from callbot.pipeline.smart_turn import SmartTurnModel

    policies = args.policies.split(",")
    for name in policies:
        if name.split("/")[0] not in POLICIES:
            raise SystemExit(f"unknown policy {name}; choose from {POLICIES}")
    items = [i for i in load_set()
             if not args.only or any(i["id"].startswith(p) for p in args.only.split(","))]
    asr = FasterWhisperRecognizer(args.asr_model, cpu_threads=2)
    asr.warm_up()
    model = None
    if any(not p.startswith("transcript") for p in policies):
        model = SmartTurnModel()
        model.warm_up()
    engines = Engines(asr=asr, llm=ScriptedLLM("Sure, I can help with that.",
                                               first_token_s=0.09, token_s=0.008),
                      tts=ScriptedTTS(delay_s=0.11), turn_model=model)  # type: ignore[arg-type]
    endpointing = EndpointingSettings()

    def variant(name: str) -> EndpointingSettings:
        flags = name.split("/")[1:]
        segmenter = dataclasses.replace(endpointing.segmenter,
                                        energy_gate="nogate" not in flags)
        return dataclasses.replace(endpointing, segmenter=segmenter,
                                   neural_vad="webrtc" not in flags)

    outcomes: list[Outcome] = []
    try:
        for item in items:
            for name in policies:
                settings = variant(name)
                out = await run_one(item, engines, build_policy(name.split("/")[0], settings,
                                                                model),
                                    TurnSettings(endpointing=settings))
                out.policy = name
                outcomes.append(out)
                flag = "PREMATURE" if out.premature else ("late" if out.late else "ok")
                print(f"{item['id']:20s} {name:16s} {flag:9s} eot={out.eot_delay_ms} "
                      f"reply={out.reply_delay_ms} {out.premature_text or out.transcript!r}",
                      flush=True)
                await asyncio.sleep(0.3)
    finally:
        asr.close()
        if model is not None:
            model.close()
    summaries = [summarize(outcomes, p) for p in policies]
    return {"policies": policies, "summaries": summaries,
            "outcomes": [o.__dict__ for o in outcomes]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="transcript,smart_turn")
    parser.add_argument("--only", help="comma-separated id prefixes (e.g. mid-,short-)")
    parser.add_argument("--asr-model", default="tiny.en")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    keys = ["policy", "utterances", "premature", "premature_rate", "late", "eot_delay_p50_ms",
            "eot_delay_p90_ms", "reply_delay_p50_ms", "reply_delay_p90_ms", "no_reply"]
    print(table(keys, [[s[k] for k in keys] for s in result["summaries"]]))
    for s in result["summaries"]:
        print(f"{s['policy']}: premature {s['premature_ids']}; late {s['late_ids']}")
    save("turns", result)


if __name__ == "__main__":
    main()
