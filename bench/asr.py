"""WER and real-time factor of our recognizer (`FasterWhisperRecognizer`: short encoder window,
greedy) against plain faster-whisper `WhisperModel.transcribe` with the same model, on the real
LibriVox + cards clips of pocketsphinx-testdata.

    python3 -m bench.asr [--model tiny.en] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from callbot.pipeline.asr.whisper import FasterWhisperRecognizer
from callbot.pipeline.audio import int16_to_float
from callbot.pipeline.text import word_errors
from support import speech

from .common import save, table


def plain_transcribe(rec: FasterWhisperRecognizer, pcm: np.ndarray, beam_size: int) -> str:
    segments, _ = rec._model.transcribe(
        int16_to_float(pcm), language="en", beam_size=beam_size, without_timestamps=True,
        condition_on_previous_text=False, vad_filter=False,
    )
    return " ".join(s.text.strip() for s in segments).strip()


def ours(rec: FasterWhisperRecognizer, pcm: np.ndarray) -> str:
    return rec._transcribe_sync(pcm, "en").text


def evaluate(name: str, fn: Any, clips: list[speech.Clip], repeat: int) -> dict[str, Any]:
    errors = words = 0
    compute = audio = 0.0
    per_clip = []
    for clip in clips:
        fn(clip.pcm)  # warm
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            text = fn(clip.pcm)
            best = min(best, time.perf_counter() - started)
        e, n = word_errors(clip.text, text)
        errors, words = errors + e, words + n
        compute, audio = compute + best, audio + clip.seconds
        per_clip.append({"clip": clip.name, "seconds": round(clip.seconds, 2),
                         "compute_s": round(best, 3), "errors": e, "words": n, "text": text})
    return {"engine": name, "wer": errors / max(words, 1), "errors": errors, "words": words,
            "audio_s": round(audio, 2), "compute_s": round(compute, 3),
            "rtf": compute / audio, "clips": per_clip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per clip (best kept)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not speech.real_speech_available():
        raise SystemExit("apt-get install pocketsphinx-testdata")
    clips = speech.librivox_clips() + speech.cards_clips()
    rec = FasterWhisperRecognizer(args.model, cpu_threads=args.threads)
    try:
        runs = [
            evaluate("ours (FasterWhisperRecognizer)", lambda p: ours(rec, p), clips, args.repeat),
            evaluate("plain transcribe, beam 1", lambda p: plain_transcribe(rec, p, 1), clips,
                     args.repeat),
            evaluate("plain transcribe, beam 5", lambda p: plain_transcribe(rec, p, 5), clips,
                     args.repeat),
        ]
    finally:
        rec.close()
    print(f"{len(clips)} clips, {sum(c.seconds for c in clips):.1f} s of speech, "
          f"model {args.model}, {args.threads} threads")
    print(table(["engine", "WER", "errors/words", "compute s", "RTF"],
                [[r["engine"], f"{100 * r['wer']:.1f} %", f"{r['errors']}/{r['words']}",
                  r["compute_s"], r["rtf"]] for r in runs]))
    short = [c for c in clips if c.seconds < 4]
    for r in runs:
        times = [x["compute_s"] for x in r["clips"] if x["seconds"] < 4]
        if times:
            print(f"  {r['engine']}: {len(short)} short clips, median "
                  f"{1000 * float(np.median(times)):.0f} ms each")
    save("asr", {"model": args.model, "threads": args.threads, "runs": runs})


if __name__ == "__main__":
    main()
