"""Word error of the live recognizer on caller answers in many voices, speeds and noises, with
and without the conversation as Whisper's prompt (the bot's last question).

Each caller line follows a bot question (DIALOGUE). Clips: espeak-ng voices and variants at
140-200 wpm and the Piper voice at three speeds, each clean and mixed with noise at 10-20 dB
SNR (`bench/turnset/make.py`'s noises). Both variants decode the same audio with the same
loaded model; time per decode is the median over clips.

    python3 -m bench.wer [--voices 6] [--model tiny.en]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from callbot.pipeline.asr.whisper import FasterWhisperRecognizer
from callbot.pipeline.text import word_errors

from .common import save, table
from .turnset.make import NOISES, Piper, espeak, noise, trim

DIALOGUE = [  # (what the bot just said, what the caller answers)
    ("Hi! What would you like to know?", "What is the capital of France?"),
    ("Which city are you flying to?", "I'm flying to Paris on Friday."),
    ("How many people is the table for?", "A table for four, please."),
    ("What's your account number?", "It's four five six seven eight."),
    ("Would you like the pasta or the salad?", "The salad, please."),
    ("What day works best for you?", "Tuesday afternoon works for me."),
    ("Can I have your last name?", "It's Johnson."),
    ("Which size would you like?", "Medium, please."),
    ("What seems to be the problem?", "My internet keeps dropping every evening."),
    ("Do you want to pay by card or cash?", "By card."),
    ("What time should I book it for?", "Seven thirty tonight."),
    ("Anything else I can help with?", "How many legs does a spider have?"),
    ("Where should we deliver it?", "To my office on Baker Street."),
    ("What colour would you like?", "Dark blue."),
    ("Is there anything you'd like to ask?", "What is the weather like in London?"),
    ("Shall I send the invoice by email?", "Yes, send it to my work address."),
]
VOICES = [("espeak", "en-us", 165), ("piper", "joe", 1.0), ("espeak", "en-gb+f3", 150),
          ("espeak", "en-gb-scotland", 175), ("piper", "joe", 0.8),
          ("espeak", "en-us-nyc+f4", 200), ("espeak", "en-029+m3", 140),
          ("piper", "joe", 1.25)]
SNRS = (10, 15, 20)


def clips(n_voices: int) -> list[dict[str, Any]]:
    piper = Piper()
    out = []
    for v, (engine, voice, speed) in enumerate(VOICES[:n_voices]):
        for i, (bot, caller) in enumerate(DIALOGUE):
            pcm = espeak(caller, voice, speed) if engine == "espeak" else piper(caller, speed)
            pcm = np.concatenate([np.zeros(3200), trim(pcm).astype(np.float64),
                                  np.zeros(1600)])
            name = f"{engine}:{voice}@{speed:g}"
            out.append({"voice": name, "bot": bot, "text": caller, "noise": "clean",
                        "pcm": pcm.astype(np.int16)})
            snr = SNRS[(i + v) % len(SNRS)]
            kind = NOISES[(i + 2 * v) % len(NOISES)]
            rms = np.sqrt(np.mean(pcm[np.abs(pcm) > 0] ** 2)) / 10 ** (snr / 20)
            noisy = pcm + rms * noise(kind, len(pcm), 1000 * v + i)
            out.append({"voice": name, "bot": bot, "text": caller, "noise": f"{kind}@{snr}dB",
                        "pcm": np.clip(np.round(noisy), -32768, 32767).astype(np.int16)})
    return out


def evaluate(rec: FasterWhisperRecognizer, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each clip decoded without and then with the prompt, one after the other (same load)."""
    rows: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for item in items:
        for prompted in (False, True):
            started = time.perf_counter()
            text = rec._transcribe_sync(item["pcm"], "en", item["bot"] if prompted else None).text
            ms = (time.perf_counter() - started) * 1000
            e, n = word_errors(item["text"], text)
            rows[prompted].append({"voice": item["voice"], "noise": item["noise"],
                                   "ref": item["text"], "hyp": text, "errors": e, "words": n,
                                   "ms": round(ms, 1)})
    return [summary(rows[p], p) for p in (False, True)]


def summary(rows: list[dict[str, Any]], prompted: bool) -> dict[str, Any]:
    def wer(sel: list[dict[str, Any]]) -> float:
        return round(sum(r["errors"] for r in sel) / max(1, sum(r["words"] for r in sel)), 4)

    voices = sorted({r["voice"] for r in rows})
    times = [r["ms"] for r in rows]
    return {"variant": "prompt = bot's last question" if prompted else "no prompt",
            "wer": wer(rows), "errors": sum(r["errors"] for r in rows),
            "words": sum(r["words"] for r in rows),
            "wer_clean": wer([r for r in rows if r["noise"] == "clean"]),
            "wer_noisy": wer([r for r in rows if r["noise"] != "clean"]),
            "wer_by_voice": {v: wer([r for r in rows if r["voice"] == v]) for v in voices},
            "decode_ms_p50": round(float(np.median(times)), 1),
            "decode_ms_p90": round(float(np.percentile(times, 90)), 1), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voices", type=int, default=6, help=f"how many of {len(VOICES)}")
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    items = clips(args.voices)
    rec = FasterWhisperRecognizer(args.model, cpu_threads=2)
    rec.warm_up()
    try:
        final = evaluate(rec, items)
    finally:
        rec.close()
    print(f"{len(items)} clips ({len(items) // 2} clean + noisy at 10-20 dB), "
          f"{args.voices} voices, model {args.model}")
    print(table(["variant", "WER", "errors/words", "clean", "noisy", "ms p50", "ms p90"],
                [[r["variant"], f"{100 * r['wer']:.1f} %", f"{r['errors']}/{r['words']}",
                  f"{100 * r['wer_clean']:.1f} %", f"{100 * r['wer_noisy']:.1f} %",
                  r["decode_ms_p50"], r["decode_ms_p90"]] for r in final]))
    for r in final:
        print(f"  {r['variant']}: " + ", ".join(f"{v} {100 * w:.1f} %"
                                                for v, w in r["wer_by_voice"].items()))
    changed = [(a, b) for a, b in zip(final[0]["rows"], final[1]["rows"], strict=True)
               if a["hyp"] != b["hyp"]]
    for a, b in changed[:20]:
        print(f"  [{a['voice']} {a['noise']}] {a['hyp']!r} -> {b['hyp']!r} "
              f"({a['errors']} -> {b['errors']})")
    save("wer", {"model": args.model, "voices": args.voices, "runs": final})


if __name__ == "__main__":
    main()
