"""Kokoro-82M against espeak-ng, per language: time to first audio (the reply's first piece as
the sentence chunker cuts it), real-time factor, and how well the multilingual Whisper base
hears each voice back (CER; WER for es/fr). Piper (English) runs in the same loop as the
reference for "how busy is the machine right now".

Every sentence is synthesized by both engines back to back (A/B in the same seconds), so the
ratios hold even though the machine is shared; absolute times are upper bounds.

    unshare -n sh -c "ip link set lo up; HF_HUB_OFFLINE=1 python3 -m bench.voices"
    ... python3 -m bench.voices --repeat 2 --languages zh,es
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import numpy as np

from bench.common import RESULTS

# Answers a business assistant gives (first sentence long enough for a first clause).
SENTENCES = {
    "zh": ["您好，我们的营业时间是每天早上九点到晚上六点。",
           "这个产品的价格是两百五十元，包括一年的保修服务。",
           "请您提供订单号码，我马上帮您查询物流信息。",
           "我们的办公室在北京市朝阳区，离地铁站很近。"],
    "es": ["Buenos días, nuestra oficina abre de lunes a viernes.",
           "El precio de este producto es de doscientos euros, con un año de garantía.",
           "Por favor, dígame su número de pedido y lo compruebo ahora mismo.",
           "Nuestra tienda está en el centro, cerca de la estación de tren."],
    "fr": ["Bonjour, notre magasin est ouvert tous les jours sauf dimanche.",
           "Le prix de ce produit est de deux cents euros, avec un an de garantie.",
           "Donnez-moi votre numéro de commande et je vérifie tout de suite.",
           "Notre bureau se trouve au centre-ville, près de la gare."],
}
ENGLISH = "Good morning, our office is open from Monday to Friday."
KOKORO = {"zh": "kokoro-zf_xiaoxiao", "es": "kokoro-ef_dora", "fr": "kokoro-ff_siwis"}
ESPEAK = {"zh": "espeak-cmn", "es": "espeak-es", "fr": "espeak-fr"}


def first_piece(text: str, language: str) -> str:
    from callbot.pipeline.text import SentenceChunker

    chunker = SentenceChunker(language=language)
    pieces = chunker.push(text + " ") + chunker.flush()
    return pieces[0]


def errors(reference: str, heard: str, language: str) -> tuple[float, float | None]:
    from callbot.pipeline.text import character_errors, word_error_rate

    cer_errors, length = character_errors(reference, heard)
    cer = cer_errors / max(1, length)
    return cer, None if language == "zh" else word_error_rate(reference, heard)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


async def run(languages: list[str], repeat: int) -> dict[str, Any]:
    from callbot.pipeline.asr.whisper import FasterWhisperRecognizer
    from callbot.pipeline.tts.espeak import EspeakSynthesizer
    from callbot.pipeline.tts.kokoro import KokoroSynthesizer
    from callbot.pipeline.tts.piper import PiperSynthesizer
    from callbot.rtc.resample import resample_pcm

    started = time.perf_counter()
    # Nothing kept: every sentence is synthesized (the engine keeps short fixed phrases).
    kokoro = KokoroSynthesizer(voices=[KOKORO[lang] for lang in languages], phrases_kept=0)
    load_s = time.perf_counter() - started
    warm = time.perf_counter()
    kokoro.warm_up()
    warm_s = time.perf_counter() - warm
    espeak = EspeakSynthesizer()
    piper = PiperSynthesizer()
    piper.warm_up()
    asr = FasterWhisperRecognizer("base")
    engines = {"kokoro": (kokoro, KOKORO), "espeak": (espeak, ESPEAK)}
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    detected: dict[tuple[str, str], list[str]] = {}
    heard_examples: dict[tuple[str, str], list[str]] = {}
    piper_rtf: list[float] = []
    load_avg = [os.getloadavg()[0]]
    for _ in range(repeat):
        for language in languages:
            for text in SENTENCES[language]:
                first = first_piece(text, language)
                for engine_name, (engine, voices) in engines.items():
                    row = rows.setdefault((language, engine_name),
                                          {"ttfa_ms": [], "rtf": [], "cer": [], "wer": [],
                                           "first_piece_chars": []})
                    voice = voices[language]
                    t0 = time.perf_counter()
                    await engine.synthesize(first, voice=voice)  # what the caller waits for
                    row["ttfa_ms"].append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    audio = await engine.synthesize(text, voice=voice)
                    row["rtf"].append((time.perf_counter() - t0) / max(audio.seconds, 1e-3))
                    row["first_piece_chars"].append(len(first))
                    pcm = resample_pcm(audio.pcm, audio.sample_rate, 16_000)
                    pad = np.zeros(4800, np.int16)
                    heard = await asr.transcribe(np.concatenate([pad, pcm, pad]))
                    detected.setdefault((language, engine_name), []).append(heard.language or "")
                    heard_examples.setdefault((language, engine_name), []).append(heard.text)
                    cer, wer = errors(text, heard.text, language)
                    row["cer"].append(cer)
                    if wer is not None:
                        row["wer"].append(wer)
                t0 = time.perf_counter()
                english = await piper.synthesize(ENGLISH)
                piper_rtf.append((time.perf_counter() - t0) / english.seconds)
        load_avg.append(os.getloadavg()[0])
    table = []
    for (language, engine_name), row in sorted(rows.items()):
        langs = detected[(language, engine_name)]
        table.append({
            "language": language, "engine": engine_name,
            "voice": engines[engine_name][1][language],
            "ttfa_ms_p50": median(row["ttfa_ms"]), "rtf_p50": median(row["rtf"]),
            "cer_mean": round(statistics.fmean(row["cer"]), 3),
            "wer_mean": round(statistics.fmean(row["wer"]), 3) if row["wer"] else None,
            "language_detected": f"{sum(v == language for v in langs)}/{len(langs)}",
            "heard": heard_examples[(language, engine_name)][:2],
        })
    kokoro.close()
    piper.close()
    return {"load_s": round(load_s, 2), "warm_up_s": round(warm_s, 2),
            "piper_en_rtf_p50": median(piper_rtf), "load_average": load_avg,
            "repeat": repeat, "rows": table}


def markdown(report: dict[str, Any]) -> str:
    by = {(r["language"], r["engine"]): r for r in report["rows"]}
    lines = ["| language | engine | first audio p50 | RTF p50 | Kokoro/espeak first audio | "
             "CER | WER | language heard |", "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        other = by.get((row["language"], "espeak"))
        ratio = (f"{row['ttfa_ms_p50'] / other['ttfa_ms_p50']:.1f}×"
                 if row["engine"] == "kokoro" and other else "")
        wer = f"{row['wer_mean']:.0%}" if row["wer_mean"] is not None else "–"
        lines.append(f"| {row['language']} | {row['engine']} ({row['voice']}) | "
                     f"{row['ttfa_ms_p50']:.0f} ms | {row['rtf_p50']:.2f} | {ratio} | "
                     f"{row['cer_mean']:.0%} | {wer} | {row['language_detected']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--languages", default="zh,es,fr")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    report = asyncio.run(run(args.languages.split(","), args.repeat))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "voices.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))
    print(markdown(report))


if __name__ == "__main__":
    main()
