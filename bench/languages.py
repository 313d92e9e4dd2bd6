"""Languages and safety figures: WER/CER per language on espeak-ng speech (synthetic!),
language detection, voice-to-voice of Chinese and German turns in real calls, and the
latency moderation adds.

    run() { unshare -n sh -c "ip link set lo up; HF_HUB_OFFLINE=1 $*"; }
    run python3 -m bench.languages                    # all three parts
    run python3 -m bench.languages --part moderation  # or asr / v2v
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from typing import Any

import numpy as np

from bench.common import RESULTS

LANGUAGES = ("en", "zh", "de", "fr", "es")
VOICES = {"en": "en-us", "zh": "cmn-latn-pinyin", "de": "de", "fr": "fr", "es": "es"}
SENTENCES = {
    "en": ["Hello, what is the weather like today in London?",
           "How many legs does a spider have?",
           "I would like to book a table for two people tonight.",
           "Can you tell me when the next train leaves?"],
    "zh": ["我想知道现在几点了。", "你好，我想知道明天北京的天气怎么样。",
           "请帮我订一张去上海的火车票。", "这家餐厅晚上几点关门？"],
    "de": ["Ich möchte gerne wissen, wie spät es jetzt ist.",
           "Wie viele Beine hat eine Spinne?",
           "Ich möchte einen Tisch für zwei Personen reservieren.",
           "Wann fährt der nächste Zug nach Berlin?"],
    "fr": ["Je voudrais savoir quelle heure il est maintenant.",
           "Combien de pattes a une araignée?",
           "Je voudrais réserver une table pour deux personnes.",
           "Quand part le prochain train pour Paris?"],
    "es": ["Quiero saber qué hora es ahora.", "¿Cuántas patas tiene una araña?",
           "Quiero reservar una mesa para dos personas.",
           "¿Cuándo sale el próximo tren para Madrid?"],
}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "mean": round(statistics.fmean(values), 3),
            "p50": round(pct(values, 50), 3), "p95": round(pct(values, 95), 3),
            "max": round(max(values), 3)}


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def clip(text: str, language: str, rate: int = 16_000) -> Any:
    from support import speech

    return speech.espeak(text, rate, voice=VOICES[language], words_per_minute=120).padded(0.3,
                                                                                          0.3)


# ---- ASR ------------------------------------------------------------------------------------


def bench_asr() -> dict[str, Any]:
    from callbot.pipeline.asr.whisper import FasterWhisperRecognizer
    from callbot.pipeline.text import character_errors, edit_distance

    base = FasterWhisperRecognizer("base")
    tiny = FasterWhisperRecognizer("tiny.en")
    out: dict[str, Any] = {"speech": "espeak-ng, 120 words/min (synthetic)", "languages": {}}
    for language, sentences in SENTENCES.items():
        errors = units = detected_ok = 0
        tiny_errors = 0
        ms: list[float] = []
        samples = []
        for text in sentences:
            pcm = clip(text, language).pcm
            fixed = base._transcribe_sync(pcm, language)
            auto = base._transcribe_sync(pcm, None, LANGUAGES)
            detected_ok += auto.language == language
            ms.append(fixed.compute_ms)
            if language == "zh":
                e, n = character_errors(text, fixed.text)
            else:
                e, n = edit_distance(words(text), words(fixed.text)), len(words(text))
            errors, units = errors + e, units + n
            if language == "en":
                tiny_errors += edit_distance(words(text), words(tiny._transcribe_sync(pcm,
                                                                                      None).text))
            samples.append({"ref": text, "hyp": fixed.text, "detected": auto.language,
                            "p": round(auto.language_probability or 0, 2)})
        row = {"metric": "CER" if language == "zh" else "WER",
               "error_rate": round(errors / units, 3), "units": units,
               "detected": f"{detected_ok}/{len(sentences)}",
               "base_ms_mean": round(statistics.fmean(ms), 1), "samples": samples}
        if language == "en":
            row["tiny_en_wer"] = round(tiny_errors / units, 3)
        out["languages"][language] = row
        print(language, {k: v for k, v in row.items() if k != "samples"}, flush=True)
    base.close()
    tiny.close()
    return out


# ---- moderation -----------------------------------------------------------------------------


ORDINARY = [s for group in SENTENCES.values() for s in group] + [
    "A spider has eight legs.", "The next train leaves at half past six.",
    "Sure, I can help you with that.", "I'm sorry, I don't know the answer to that.",
    "蜘蛛有八条腿。", "Eine Spinne hat acht Beine.",
]


async def bench_moderation(rounds: int) -> dict[str, Any]:
    from aiohttp import web

    from callbot.pipeline.safety.guard import build_guard
    from callbot.pipeline.safety.moderation import ProfanityClassifier, WordListModerator
    from callbot.pipeline.safety.settings import SafetySettings
    from callbot.pipeline.tts.espeak import EspeakSynthesizer
    from callbot.pipeline.tts.piper import PiperSynthesizer

    out: dict[str, Any] = {}
    words_mod = WordListModerator()
    classifier = ProfanityClassifier() if ProfanityClassifier.available() else None
    timings: dict[str, list[float]] = {"word_list": [], "classifier": [], "guard": []}
    guard = build_guard(SafetySettings())
    assert guard is not None
    for _ in range(rounds):
        for text in ORDINARY:
            started = time.perf_counter()
            words_mod.match(text)
            timings["word_list"].append((time.perf_counter() - started) * 1000)
            if classifier is not None:
                started = time.perf_counter()
                classifier.score(text)
                timings["classifier"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await guard.check_bot(text, "en")
            timings["guard"].append((time.perf_counter() - started) * 1000)
    out["check_ms"] = {k: summary(v) for k, v in timings.items() if v}

    # A local OpenAI-compatible /v1/moderations on loopback (answers at once): the HTTP cost.
    async def moderations(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"results": [{"flagged": False, "categories": {}}]})

    app = web.Application()
    app.router.add_post("/v1/moderations", moderations)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    endpoint_guard = build_guard(SafetySettings(endpoint_url=f"http://127.0.0.1:{port}/v1"))
    assert endpoint_guard is not None
    endpoint_ms = []
    for text in ORDINARY * rounds:
        started = time.perf_counter()
        await endpoint_guard.check_caller(text, "en")
        endpoint_ms.append((time.perf_counter() - started) * 1000)
    out["check_ms"]["guard_with_local_endpoint"] = summary(endpoint_ms)
    await endpoint_guard.close()
    await runner.cleanup()

    # What the caller would wait for: a sentence synthesized alone vs. synthesized while it
    # is checked (the session's path), alternating, same sentences.
    piper = PiperSynthesizer()
    piper.warm_up()
    espeak = EspeakSynthesizer()
    added: dict[str, dict[str, list[float]]] = {}
    for name, engine, voice in (("piper", piper, None), ("espeak", espeak, "espeak-de")):
        alone, checked = [], []
        for text in ORDINARY[:12] * max(1, rounds // 2):
            started = time.perf_counter()
            await engine.synthesize(text, voice=voice)
            alone.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await asyncio.gather(engine.synthesize(text, voice=voice),
                                 guard.check_bot(text, "en"))
            checked.append((time.perf_counter() - started) * 1000)
        added[name] = {"alone": alone, "checked": checked}
        out[f"sentence_{name}_ms"] = {"synthesis_alone": summary(alone),
                                      "synthesis_while_checked": summary(checked),
                                      "added_p50": round(pct(checked, 50) - pct(alone, 50), 2)}
    piper.close()
    await guard.close()
    for key, value in out.items():
        print(key, json.dumps(value), flush=True)
    return out


# ---- voice to voice -------------------------------------------------------------------------


async def bench_v2v(turns: int) -> dict[str, Any]:
    from aiohttp import web

    from callbot.loadtest.caller import SyntheticCaller, speech_end_offset
    from callbot.pipeline.settings import EngineSettings
    from callbot.signalling.app import create_app, shared_engines
    from callbot.signalling.config import CallbotConfig, Limits

    config = CallbotConfig(ice_hosts=("127.0.0.1",), languages=LANGUAGES,
                           engines=EngineSettings(asr_model="auto"),
                           limits=Limits(max_calls_per_client=100, call_rate_per_minute=10_000))
    engines = await asyncio.to_thread(shared_engines, config.engines)
    runner = web.AppRunner(create_app(config, engines=engines))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    out: dict[str, Any] = {}
    try:
        # An English call (tiny.en after its first, detected, turn) as the control, measured in
        # the same run: the shared machine's load changes by the minute.
        for language, options in (("zh", {"language": "zh"}), ("de", None),
                                  ("en", {"language": "en"})):
            caller = SyntheticCaller(url, options=options)
            await caller.connect()
            v2v, metrics, texts = [], [], []
            for i in range(turns):
                sample = clip(SENTENCES[language][i % 2], language, 48_000)
                start = len(caller.events)
                end_at = int(speech_end_offset(sample.pcm, sample.rate) * sample.rate)
                speech_end = caller.mic.say(sample.pcm[:end_at], sample.rate)
                caller.mic.say(sample.pcm[end_at:], sample.rate)
                await caller.wait_event("response.audio.done", timeout=60, after=start)
                t_end = await speech_end
                t_voice = caller.heard.first_voice_after(t_end)
                metric = await caller.wait_event("metrics", timeout=5, after=start)
                final = next(d for _, d in caller.events[start:]
                             if d["type"] == "transcript.final")
                if t_voice is not None:
                    v2v.append((t_voice - t_end) * 1000)
                metrics.append(metric)
                texts.append(final["text"])
                await asyncio.sleep(1.0)
            await caller.hangup()
            out[language] = {
                "v2v_ms": summary(v2v),
                "asr_ms": summary([m["asr_ms"] for m in metrics if "asr_ms" in m]),
                "llm_first_token_ms": summary([m["llm_first_token_ms"] for m in metrics
                                               if "llm_first_token_ms" in m]),
                "tts_first_ms": summary([m["tts_first_ms"] for m in metrics
                                         if "tts_first_ms" in m]),
                "moderation_ms": summary([m["moderation_ms"] for m in metrics
                                          if "moderation_ms" in m]),
                "transcripts": texts,
            }
            print(language, json.dumps(out[language], ensure_ascii=False), flush=True)
    finally:
        await runner.cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["all", "asr", "moderation", "v2v"], default="all")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--turns", type=int, default=3)  # per language
    args = parser.parse_args()
    results: dict[str, Any] = {"note": "espeak-ng speech is synthetic; shared 2-core machine"}
    if args.part in ("all", "asr"):
        results["asr"] = bench_asr()
    if args.part in ("all", "moderation"):
        results["moderation"] = asyncio.run(bench_moderation(args.rounds))
    if args.part in ("all", "v2v"):
        results["v2v"] = asyncio.run(bench_v2v(args.turns))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"languages-{args.part}.json"
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
