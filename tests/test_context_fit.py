"""Conversation length (issue 15): within the documented limits, history + notes + passages +
the turn never overflow the model's context window (the embedded SmolLM2 has n_ctx 2048)."""

from __future__ import annotations

import random

from callbot.pipeline.context_fit import PER_MESSAGE_TOKENS, estimate_tokens, fit_messages
from callbot.pipeline.engines import Engines
from callbot.pipeline.fakes import MemoryOutput, ScriptedASR, ScriptedLLM, ScriptedTTS
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.settings import ReplySettings, TurnSettings
from callbot.signalling.config import Limits

WORDS = ["spider", "legs", "eight", "weather", "tomorrow", "order", "1234", "ok", "über",
         "naïve", "你好", "世界", "🙂", "Straße", "données", "#", "--", "x7Qz"]


def _text(n_chars: int, seed: int) -> str:
    rnd = random.Random(seed)
    out = ""
    while len(out) < n_chars:
        out += rnd.choice(WORDS) + " "
    return out[:n_chars]


def _at_the_limits() -> list[dict[str, str]]:
    limits, reply = Limits(), ReplySettings()
    messages = [{"role": "system", "content": _text(limits.max_prompt_chars, 1)},
                {"role": "system", "content": "Notes:\n" + _text(reply.max_context_chars, 2)}]
    for i in range(reply.max_history_messages):
        messages.append({"role": "user" if i % 2 == 0 else "assistant",
                         "content": _text(limits.max_text_chars, 10 + i)})
    messages.append({"role": "system", "content": "Passage: " + _text(3000, 3)})
    messages.append({"role": "user", "content": "LAST " + _text(limits.max_text_chars, 4)})
    return messages  # type: ignore[return-value]


async def test_the_embedded_model_never_overflows(engines: Engines) -> None:
    llm = engines.llm
    reply = ""
    async for delta in llm.stream_chat(_at_the_limits(), max_tokens=8,  # type: ignore[arg-type]
                                       temperature=0.0):
        reply += delta
    assert reply.strip()


def test_fit_keeps_the_newest_and_fits_the_real_tokenizer() -> None:
    from llama_cpp import Llama

    from callbot.pipeline.llm.llama_local import smollm2_gguf_path

    # The embedded model's own tokenizer (the model itself runs in a child process).
    llama = Llama(model_path=str(smollm2_gguf_path()), vocab_only=True, verbose=False)

    def real(text: str) -> int:
        return len(llama.tokenize(text.encode(), add_bos=False, special=False))

    budget = 2048 - 60
    fitted = fit_messages(_at_the_limits(), budget)  # the estimate, no tokenizer
    assert sum(real(m["content"]) + PER_MESSAGE_TOKENS for m in fitted) <= budget
    assert fitted[0]["role"] == "system" and fitted[-1]["content"].startswith("LAST")
    history = [m for m in fitted[:-1] if m["role"] in ("user", "assistant")]
    assert history, "the newest history should still fit"
    newest = _at_the_limits()[-3]["content"]  # the newest history is what is kept (maybe cut)
    assert history[-1]["content"] and newest.startswith(history[-1]["content"])


async def test_the_session_fits_what_it_sends() -> None:
    llm = ScriptedLLM("Fine.")
    session = VoiceSession(
        Engines(asr=ScriptedASR([]), llm=llm, tts=ScriptedTTS()),  # type: ignore[arg-type]
        output=MemoryOutput(), emit=lambda e: None, settings=TurnSettings(),
        system_prompt=_text(2000, 5))
    session.add_context(_text(4000, 6))
    for m in _at_the_limits()[2:-2]:
        session.history.append(m)  # type: ignore[arg-type]
    messages = session._messages(len(session.history), _text(1000, 7), [_text(3000, 8)])
    reply = session.settings.reply
    assert sum(estimate_tokens(m["content"]) + PER_MESSAGE_TOKENS for m in messages
               ) <= reply.context_window_tokens - reply.max_tokens
