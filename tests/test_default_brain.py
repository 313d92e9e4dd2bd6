"""The default brain (Qwen2.5-Coder-1.5B-Instruct, a default dependency): assembled from its 22
registry packages with the sha256 checked, it answers plain questions right in the caller's
language, answers from a passage, and a second turn of the same conversation pays only for
its new tokens (the system prompt and history states are cached). The rest of the suite runs
on the fast SmolLM2 (tests/conftest.py)."""

from __future__ import annotations

import time

from callbot.pipeline.engines import build_llm
from callbot.pipeline.knowledge.source import KNOWLEDGE_INSTRUCTIONS
from callbot.pipeline.lang import language_instruction
from callbot.pipeline.llm.base import ChatMessage
from callbot.pipeline.llm.quality import QWEN_SIZE, qwen_gguf_path
from callbot.pipeline.safety.injection import quote_context
from callbot.pipeline.settings import DEFAULT_SYSTEM_PROMPT, EngineSettings

SYSTEM = DEFAULT_SYSTEM_PROMPT + KNOWLEDGE_INSTRUCTIONS
PASSAGE = quote_context("From the documents", '[1] From "Prices and rentals": '
                        "Fixing a flat tyre costs 15 euros including a new inner tube.")[0]


async def reply(llm: object, messages: list[ChatMessage]) -> tuple[str, float]:
    started = time.perf_counter()
    first = None
    text = ""
    async for delta in llm.stream_chat(messages, max_tokens=40, temperature=0.0):  # type: ignore[attr-defined]
        first = first or time.perf_counter()
        text += delta
    assert first is not None
    return text, (first - started) * 1000


async def test_quality_model_answers_from_passages_and_caches_the_prefix() -> None:
    path = qwen_gguf_path()  # assembled and checked once; then found in the cache
    assert path.stat().st_size == QWEN_SIZE
    assert EngineSettings().llm_model == "qwen2.5-1.5b"  # the default
    llm = build_llm(EngineSettings(llm_model="qwen2.5-1.5b"))
    try:
        assert "qwen" in llm.name.lower()
        llm.warm_up(SYSTEM)
        history: list[ChatMessage] = [{"role": "system", "content": SYSTEM}]
        first_q: list[ChatMessage] = [*history, {"role": "system", "content": PASSAGE},
                                      {"role": "user", "content": "How much is a flat tyre fix?"}]
        answer, first_ms = await reply(llm, first_q)
        assert "15" in answer, answer
        # The next turn of the same call: system prompt + history are cached states.
        history += [{"role": "user", "content": "How much is a flat tyre fix?"},
                    {"role": "assistant", "content": answer}]
        second_q: list[ChatMessage] = [*history, {"role": "user", "content": "Thanks. Bye!"}]
        _, second_ms = await reply(llm, second_q)
        print(f"qwen first token: {first_ms:.0f} ms (passage turn), {second_ms:.0f} ms (next)")
    finally:
        await llm.close()


# (language, question, any of these in the answer): plain facts a caller asks, in the
# languages the default serves; the words are the ones any right answer contains.
PLAIN = [
    ("en", "What is the capital city of France?", ("paris",)),
    ("en", "How many legs does a spider have?", ("eight", "8")),
    ("en", "At what temperature in Celsius does water freeze?", ("0", "zero")),
    ("zh", "中国的首都是哪里？", ("北京",)),
    ("de", "Was ist die Hauptstadt von Deutschland?", ("berlin",)),
    ("es", "¿Cuántos días tiene una semana?", ("siete", "7")),
]


async def test_default_brain_answers_plain_questions_in_the_callers_language() -> None:
    llm = build_llm(EngineSettings())
    try:
        llm.warm_up(DEFAULT_SYSTEM_PROMPT)
        wrong = []
        for language, question, expected in PLAIN:
            messages: list[ChatMessage] = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
            instruction = language_instruction(language)
            if instruction:
                messages.append({"role": "system", "content": instruction})
            messages.append({"role": "user", "content": question})
            answer, _ = await reply(llm, messages)
            if not any(word in answer.lower() for word in expected):
                wrong.append((question, answer))
        assert not wrong, wrong
    finally:
        await llm.close()
