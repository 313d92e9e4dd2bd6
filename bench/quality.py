"""bench/quality: is the embedded brain right, and how fast does it start answering?

A held-out set of plain questions (facts, arithmetic, a few in zh/de/fr/es), each scored
automatically: right when an expected answer appears and no known wrong one does. Each model /
configuration answers every question through the same code a call uses (system prompt, the
language instruction, the call's token cap, greedy-ish decoding), timed: first token and whole
reply. Usage (2 cores shared with other work: say so beside the numbers):

    PYTHONPATH=. python3 bench/quality.py [--models smollm2-135m,qwen2.5-1.5b] [--old-prompt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS  # noqa: E402
from callbot.pipeline.engines import build_llm  # noqa: E402
from callbot.pipeline.lang import language_instruction  # noqa: E402
from callbot.pipeline.settings import DEFAULT_SYSTEM_PROMPT, EngineSettings  # noqa: E402

OLD_PROMPT = ("You are a friendly voice assistant on a phone call. Answer in one or two short, "
              "plain sentences. No lists, no markdown, no emoji.")

# (language, question, right answers (regex, any), wrong answers (regex, none may appear))
QUESTIONS: list[tuple[str, str, str, str]] = [
    ("en", "What is the capital city of Italy?", r"\brome\b", r"\b(milan|venice|paris)\b"),
    ("en", "How many days are there in a week?", r"\b(seven|7)\b", r"\b(five|six|eight)\b"),
    ("en", "What colour is a ripe banana?", r"\byellow\b", r"\b(blue|purple)\b"),
    ("en", "Which planet do we live on?", r"\bearth\b", r"\b(mars|venus)\b"),
    ("en", "What is five plus three?", r"\b(eight|8)\b", r"\b(seven|nine|7|9|53)\b"),
    ("en", "What do bees make?", r"\bhoney\b", r"\b(don't|do not|doesn't) (actually )?make"),
    ("en", "At what temperature in Celsius does water boil at sea level?",
     r"\b100\b|\bhundred\b", r"\b(50|90|212 ?°?c)\b"),
    ("en", "How many legs does a dog have?", r"\b(four|4)\b", r"\b(two|six|eight)\b legs"),
    ("en", "What is the largest ocean on Earth?", r"\bpacific\b", r"\batlantic\b is the largest"),
    ("en", "Who wrote Romeo and Juliet?", r"\bshakespeare\b", r"\bdickens\b"),
    ("en", "What is ten minus four?", r"\b(six|6)\b", r"\b(five|seven|14|fourteen)\b"),
    ("en", "What gas do plants take in from the air?", r"carbon dioxide|\bco2\b", r"^no\b"),
    ("en", "How many hours are there in a day?", r"\b(24|twenty-four|twenty four)\b",
     r"\b(12|twelve) hours in a day"),
    ("en", "What is the capital of Japan?", r"\btokyo\b", r"\b(kyoto|osaka|beijing)\b"),
    ("zh", "法国的首都是哪里？", r"巴黎", r"伦敦|柏林"),
    ("zh", "一年有几个月？", r"十二|12", r"十个月|十一"),
    ("de", "Was ist die Hauptstadt von Deutschland?", r"\bberlin\b", r"\b(münchen|bonn)\b"),
    ("de", "Wie viele Tage hat eine Woche?", r"\b(sieben|7)\b", r"\b(fünf|sechs|acht)\b"),
    ("fr", "Quelle est la capitale de l'Espagne ?", r"\bmadrid\b", r"\b(barcelone|lisbonne)\b"),
    ("es", "¿Cuántos días tiene una semana?", r"\b(siete|7)\b", r"\b(cinco|seis|ocho)\b"),
]


async def ask(llm: object, prompt: str, language: str, question: str,
              max_tokens: int) -> tuple[str, float, float]:
    instruction = language_instruction(language)
    system = f"{prompt} {instruction}" if instruction else prompt
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    started = time.perf_counter()
    first = None
    text = ""
    async for delta in llm.stream_chat(messages, max_tokens=max_tokens,  # type: ignore[attr-defined]
                                       temperature=0.2):
        if first is None:
            first = time.perf_counter() - started
        text += delta
    return text, first or 0.0, time.perf_counter() - started


def right(text: str, good: str, bad: str) -> bool:
    low = text.lower()
    return bool(re.search(good, low)) and not re.search(bad, low)


async def run_config(model: str, prompt_name: str, repeat_penalty: float) -> dict[str, object]:
    prompt = OLD_PROMPT if prompt_name == "old" else DEFAULT_SYSTEM_PROMPT
    # repeat_penalty is only a label now: the merged llama_local has none (see RESULTS).
    llm = build_llm(EngineSettings(llm_model=model, llm_isolation="thread"))
    llm.warm_up(prompt)
    rows = []
    for language, question, good, bad in QUESTIONS:
        text, first, total = await ask(llm, prompt, language, question, 60)
        ok = right(text, good, bad)
        rows.append({"language": language, "question": question, "answer": text.strip(),
                     "right": ok, "first_token_s": round(first, 3), "total_s": round(total, 2)})
        print(f"  {model:<13} {'OK ' if ok else 'BAD'} {first:5.2f}s {language} {question} -> "
              f"{text.strip()[:90]!r}", flush=True)
    await llm.close()
    by_lang: dict[str, list[bool]] = {}
    for row in rows:
        by_lang.setdefault(str(row["language"]), []).append(bool(row["right"]))
    return {
        "model": model, "prompt": prompt_name, "repeat_penalty": repeat_penalty,
        "right": sum(bool(r["right"]) for r in rows), "questions": len(rows),
        "right_by_language": {k: f"{sum(v)}/{len(v)}" for k, v in by_lang.items()},
        "first_token_median_s": round(statistics.median(
            float(r["first_token_s"]) for r in rows), 3),  # type: ignore[arg-type]
        "total_median_s": round(statistics.median(
            float(r["total_s"]) for r in rows), 2),  # type: ignore[arg-type]
        "rows": rows,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="smollm2-135m:old:1.0,smollm2-135m:new:1.1,"
                                              "qwen2.5-1.5b:new:1.1",
                        help="model:prompt(old|new):repeat_penalty, comma-separated")
    args = parser.parse_args()
    results = []
    for spec in args.configs.split(","):
        model, prompt_name, penalty = spec.split(":")
        results.append(await run_config(model, prompt_name, float(penalty)))
    print("\n| model | prompt | repeat penalty | right | by language | first token (median) "
          "| whole reply (median) |\n|---|---|---|---|---|---|---|")
    for r in results:
        langs = ", ".join(f"{k} {v}" for k, v in r["right_by_language"].items())  # type: ignore[attr-defined]
        print(f"| {r['model']} | {r['prompt']} | {r['repeat_penalty']} | {r['right']}/"
              f"{r['questions']} | {langs} | {r['first_token_median_s']} s | "
              f"{r['total_median_s']} s |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "quality.json"
    out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
