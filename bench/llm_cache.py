"""The embedded LLM alone with several conversations taking turns: time to first token and
total LLM time with and without the state cache (`[engines] llm_state_cache_mb`), and with
llama-cpp-python's stock state saving (which copies every evaluated token's logits).

    python3 -m bench.llm_cache [--calls 4] [--turns 5] [--rounds 2]

Each conversation asks a question per turn and keeps the model's answers as its history, as a
call does; the conversations take turns one reply at a time (the model serves one at a time).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from callbot.pipeline.llm.base import ChatMessage
from callbot.pipeline.llm.llama_local import lean_state_llama, smollm2_gguf_path
from callbot.pipeline.settings import DEFAULT_SYSTEM_PROMPT

from .common import save, table

QUESTIONS = ["How many legs does a spider have?", "What is the capital of France?",
             "Can you recommend a good book?", "What time is it in Tokyo?",
             "Tell me a fun fact.", "How do I bake bread?"]
VARIANTS = {"no cache": (0, True), "cache 256 MB": (256, True),
            "cache 256 MB, stock save_state": (256, False)}


def conversations(cache_mb: int, lean: bool, calls: int, turns: int) -> dict[str, Any]:
    from llama_cpp import Llama
    from llama_cpp.llama_cache import LlamaRAMCache

    engine = lean_state_llama() if lean else Llama
    llm = engine(model_path=str(smollm2_gguf_path()), n_ctx=2048, n_threads=2, verbose=False)
    if cache_mb:
        llm.set_cache(LlamaRAMCache(capacity_bytes=cache_mb << 20))
    histories: list[list[ChatMessage]] = [
        [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}] for _ in range(calls)]
    first_token: list[float] = []
    started_all = time.perf_counter()
    for turn in range(turns):
        for call, history in enumerate(histories):
            history.append({"role": "user", "content": QUESTIONS[(call + turn) % len(QUESTIONS)]})
            started = time.perf_counter()
            first: float | None = None
            text = ""
            for chunk in llm.create_chat_completion(messages=history,  # type: ignore[arg-type]
                                                    max_tokens=40, temperature=0.2,
                                                    stream=True):
                delta = chunk["choices"][0]["delta"].get("content")  # type: ignore[index]
                if delta:
                    first = first if first is not None else time.perf_counter() - started
                    text += delta
            first_token.append((first or 0.0) * 1000)
            history.append({"role": "assistant", "content": text})
    total = time.perf_counter() - started_all
    ordered = sorted(first_token)
    return {"first_token_p50_ms": round(statistics.median(ordered), 1),
            "first_token_p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "llm_s": round(total, 2), "replies": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="variants interleaved")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for name, (cache_mb, lean) in VARIANTS.items():
            result = {"variant": name, "round": r + 1,
                      **conversations(cache_mb, lean, args.calls, args.turns)}
            print(result, flush=True)
            runs.append(result)
    keys = ["variant", "round", "first_token_p50_ms", "first_token_p90_ms", "llm_s", "replies"]
    print(table(keys, [[run[k] for k in keys] for run in runs]))
    save("llm-cache", {"calls": args.calls, "turns": args.turns, "runs": runs})


if __name__ == "__main__":
    main()
