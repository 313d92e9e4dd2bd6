"""A slow brain never means silence: a holding phrase when the first token is slow, an apology
when the reply misses its deadline. The LLM is scripted (ScriptedLLM: the only way to make a
model reliably slow on a shared machine); ASR and TTS are the real models."""

from __future__ import annotations

import dataclasses

from callbot.pipeline.engines import Engines
from callbot.pipeline.fakes import EventRecorder, MemoryOutput, ScriptedLLM
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.settings import ReplySettings, TurnSettings


def session_with(engines: Engines, llm: ScriptedLLM, reply: ReplySettings,
                 ) -> tuple[VoiceSession, EventRecorder, MemoryOutput]:
    output, recorder = MemoryOutput(), EventRecorder()
    session = VoiceSession(dataclasses.replace(engines, llm=llm), output=output, emit=recorder,
                           settings=TurnSettings(reply=reply))
    return session, recorder, output


async def test_slow_first_token_gets_a_holding_phrase_outside_the_answer(
        engines: Engines) -> None:
    llm = ScriptedLLM("A spider has eight legs.", first_token_s=2.0)
    session, rec, output = session_with(engines, llm, ReplySettings(hold_after_s=0.3))
    try:
        session.submit_text("How many legs does a spider have?")
        await rec.wait_for("metrics", timeout=30)
        # Two utterances: the holding phrase (before the first token came), then the answer.
        assert len(output.enqueued) >= 2
        hold_pcm, rate = output.enqueued[0]
        assert 0.4 < len(hold_pcm) / rate < 3.0  # "One moment, please."
        text = "".join(d["delta"] for d in rec.all("response.text.delta"))
        assert "eight" in text and "moment" not in text.lower()
        assert "moment" not in session.history[-1]["content"].lower()
    finally:
        await session.close()


async def test_fast_reply_has_no_holding_phrase(engines: Engines) -> None:
    llm = ScriptedLLM("Eight legs.", first_token_s=0.05)
    session, rec, output = session_with(engines, llm, ReplySettings(hold_after_s=1.5))
    try:
        session.submit_text("How many legs does a spider have?")
        await rec.wait_for("metrics", timeout=30)
        assert len(output.enqueued) == 1
    finally:
        await session.close()


async def test_a_timed_out_reply_ends_with_an_apology_not_silence(engines: Engines) -> None:
    llm = ScriptedLLM("Too late.", first_token_s=30.0)
    session, rec, output = session_with(
        engines, llm, ReplySettings(hold_after_s=0, timeout_s=0.5))
    try:
        session.submit_text("Tell me about the history of Rome")
        error = await rec.wait_for("error", timeout=30)
        assert error["code"] == "llm_timeout"
        assert output.enqueued and output.seconds > 1.0  # the spoken apology
        assert not rec.all("response.text.delta")  # not shown as the answer
    finally:
        await session.close()
