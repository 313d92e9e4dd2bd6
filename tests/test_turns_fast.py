"""Turn-taking with scripted engines: speculation, carry-over, barge-in, held audio, the call
handle's actions and the end-of-turn policy, each deterministic and in about a second.

The real-model versions stay in tests/test_session.py; these pin the logic itself, with
timings chosen to expose ordering bugs (slow ASR, fast LLM, and so on).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from callbot.pipeline.augment import TurnContext, TurnRequest
from callbot.pipeline.backchannel import is_backchannel
from callbot.pipeline.backchannel import words as backchannel_words
from callbot.pipeline.engines import Engines
from callbot.pipeline.fakes import (
    EnergyVad,
    EventRecorder,
    MemoryOutput,
    ScriptedASR,
    ScriptedLLM,
    ScriptedTTS,
    silence_frames,
    voice_frames,
)
from callbot.pipeline.session import CONTEXT_HEADER, VoiceSession
from callbot.pipeline.settings import InterruptionSettings, TurnSettings

QUESTION = "How many legs does a spider have?"


def make(finals: list[str], *, reply: str = "A spider has eight legs.", asr_s: float = 0.05,
         realtime: bool = False, settings: TurnSettings | None = None,
         llm: ScriptedLLM | None = None
         ) -> tuple[VoiceSession, EventRecorder, MemoryOutput, Engines]:
    engines = Engines(asr=ScriptedASR(finals, final_s=asr_s),
                      llm=llm or ScriptedLLM(reply, first_token_s=0.03),
                      tts=ScriptedTTS(seconds_per_char=0.03))
    output = MemoryOutput(realtime=realtime)
    recorder = EventRecorder()
    session = VoiceSession(engines, output=output, emit=recorder, vad=EnergyVad(),
                           settings=settings)
    return session, recorder, output, engines


async def feed(session: VoiceSession, frames: list[np.ndarray]) -> None:
    """Frames at call pace (20 ms each), so the session's tasks run in between."""
    started = time.monotonic()
    for i, frame in enumerate(frames):
        session.feed(frame)
        await asyncio.sleep(max(0.0, started + (i + 1) * 0.02 - time.monotonic()))


async def talking(finals: list[str], reply: str, settings: TurnSettings | None = None
                  ) -> tuple[VoiceSession, EventRecorder, MemoryOutput]:
    """A session whose bot has just started saying `reply` to the first of `finals`."""
    session, rec, output, _ = make(finals, reply=reply, realtime=True, settings=settings)
    await feed(session, voice_frames(600) + silence_frames(400))
    await rec.wait_for("response.audio.started", 2)
    return session, rec, output


async def test_speculative_reply_is_held_until_the_turn_is_confirmed() -> None:
    session, rec, output, _ = make([QUESTION])
    try:
        await feed(session, voice_frames(600) + silence_frames(200))
        # 200 ms of silence: paused and speculating (ASR 50 ms, LLM, TTS all done by now),
        # but a question needs 300 ms, so nothing may be heard or published yet.
        assert "transcript.final" not in rec.names()
        assert output.enqueued == []
        await feed(session, silence_frames(200))
        await rec.wait_for("metrics", 2)
        names = rec.names()
        assert names.index("vad.speech_stopped") < names.index("transcript.final") < (
            names.index("response.text.delta")) < names.index("response.audio.started")
        metrics = rec.all("metrics")[-1]
        # The held audio is released the moment the turn is confirmed: first audio follows
        # the end of the turn within a few frames, not a whole LLM+TTS round later.
        assert metrics["first_audio_ms"] - metrics["end_of_turn_ms"] < 60
        assert 280 <= metrics["end_of_turn_ms"] <= 380
    finally:
        await session.close()


async def test_resumed_speech_drops_the_speculation() -> None:
    llm = ScriptedLLM("Eight.", first_token_s=0.03)
    session, rec, output, _ = make(["I'd like to book", "I'd like to book a table for two."],
                                   llm=llm)
    try:
        # A mid-sentence pause (incomplete: needs 1200 ms), then the rest of the sentence.
        await feed(session, voice_frames(500) + silence_frames(400) + voice_frames(500)
                   + silence_frames(700))
        await rec.wait_for("metrics", 2)
        finals = rec.all("transcript.final")
        assert [f["text"] for f in finals] == ["I'd like to book a table for two."]
        assert len(output.enqueued) >= 1
        # Only the whole sentence reached the LLM as a user turn.
        assert [m["content"] for m in llm.requests[-1] if m["role"] == "user"] == [
            "I'd like to book a table for two."]
    finally:
        await session.close()


async def test_greeting_then_question_is_one_turn_even_after_the_bot_started() -> None:
    # "Hello there." waits 1200 ms; with an 800 ms pause the question arrives first.
    session, rec, _, _ = make(["Hello there.", "Hello there. " + QUESTION])
    try:
        await feed(session, voice_frames(500) + silence_frames(800) + voice_frames(800)
                   + silence_frames(500))
        await rec.wait_for("metrics", 2)
        assert [f["text"] for f in rec.all("transcript.final")] == ["Hello there. " + QUESTION]
    finally:
        await session.close()


async def test_barge_in_stops_the_bot_and_keeps_what_was_heard() -> None:
    reply = "Spiders have eight legs. They also have many eyes, and they spin silk webs."
    session, rec, output = await talking([QUESTION, "Stop."], reply)
    try:
        await feed(session, silence_frames(400))  # ~0.4 s of the reply is heard
        await feed(session, voice_frames(200))
        assert output.held  # silent at once; stopped once the words are known (not "mm-hmm")
        await feed(session, silence_frames(300))
        interrupted = await rec.wait_for("response.interrupted", 1)
        assert interrupted["reason"] == "barge_in"
        assert output.clears and output.clears[-1] > 0.5  # the rest was dropped unheard
        spoken = interrupted["spoken_text"]
        assert spoken and reply.startswith(spoken) and spoken != reply
        assert session.history[-1] == {"role": "assistant", "content": spoken}
    finally:
        await session.close()


async def test_unheard_answer_carries_the_words_into_the_next_turn() -> None:
    # The caller pauses long enough for a statement to be answered, but speaks again before
    # any of the answer was heard: their words lead the next turn instead of being answered.
    session, rec, _, _ = make(["My order number is", "My order number is A1001."],
                              reply="Which order?", realtime=True, asr_s=0.05)
    try:
        await feed(session, voice_frames(500) + silence_frames(1300))
        await rec.wait_for("transcript.final", 1)
        await feed(session, voice_frames(300) + silence_frames(700))
        await rec.wait_for("metrics", 2)
        finals = [f["text"] for f in rec.all("transcript.final")]
        assert finals[-1].startswith("My order number is")
    finally:
        await session.close()


async def test_interruption_can_be_turned_off() -> None:
    settings = TurnSettings(interruption=InterruptionSettings(enabled=False))
    session, rec, _, _ = make([QUESTION], realtime=True, settings=settings,
                              reply="Spiders have eight legs and many eyes.")
    try:
        await feed(session, voice_frames(600) + silence_frames(400))
        await rec.wait_for("response.audio.started", 2)
        await feed(session, voice_frames(300))
        assert "response.interrupted" not in rec.names()
    finally:
        await session.close()


async def test_say_speaks_now_and_joins_the_history() -> None:
    session, rec, output, _ = make([QUESTION])
    try:
        session.say("Hello Ada, how can I help?")
        await rec.wait_for("response.audio.done", 2)
        assert "".join(d["delta"] for d in rec.all("response.text.delta")) == (
            "Hello Ada, how can I help?")
        assert output.seconds > 0.3
        assert session.history[-1] == {"role": "assistant",
                                       "content": "Hello Ada, how can I help?"}
    finally:
        await session.close()


async def test_add_context_reaches_every_following_reply() -> None:
    llm = ScriptedLLM("Yes.", first_token_s=0.01)
    session, rec, _, _ = make([QUESTION], llm=llm)
    try:
        session.add_context("The caller is Ada Lovelace; last order A1001.")
        session.submit_text("What was my last order?")
        await rec.wait_for("metrics", 2)
        notes = [m["content"] for m in llm.requests[-1] if m["role"] == "system"]
        assert len(notes) == 2 and notes[1].startswith(CONTEXT_HEADER)
        assert "A1001" in notes[1]
    finally:
        await session.close()


async def test_context_notes_stay_within_their_budget() -> None:
    session, _, _, _ = make([QUESTION])
    limit = session.settings.reply.max_context_chars
    for i in range(50):
        session.add_context(f"note {i} " + "x" * 300)
    assert sum(len(n) for n in session._context) <= limit
    assert session._context[-1].startswith("note 49")
    await session.close()


async def test_a_failing_llm_is_an_error_event_and_the_session_goes_on() -> None:
    session, rec, _, engines = make([QUESTION], llm=ScriptedLLM(fail=True))
    try:
        session.submit_text("Hello?")
        error = await rec.wait_for("error", 2)
        assert error["code"] == "llm_failed"
        assert rec.all("bot.state")[-1]["state"] == "listening"
        engines.llm.fail = False  # type: ignore[attr-defined]
        session.submit_text("Hello again?")
        await rec.wait_for("metrics", 2)
    finally:
        await session.close()


class AudioVerdict:
    """An end-of-turn policy that trusts an audio judgement: 'finished' ends at 100 ms."""

    name = "audio-verdict"
    uses_audio = True

    def __init__(self, verdict: float) -> None:
        self.verdict = verdict
        self.judged = 0

    async def judge_audio(self, audio: np.ndarray) -> float | None:
        self.judged += 1
        return self.verdict

    def required_silence_ms(self, transcript: str | None, audio_complete: float | None) -> int:
        if audio_complete is not None and audio_complete > 0.5:
            return 100
        return 2000


@pytest.mark.parametrize(("verdict", "ends"), [(0.9, True), (0.1, False)])
async def test_an_audio_end_of_turn_policy_plugs_in(verdict: float, ends: bool) -> None:
    engines = Engines(asr=ScriptedASR(["I think that"]), llm=ScriptedLLM("Go on."),
                      tts=ScriptedTTS())
    rec = EventRecorder()
    policy = AudioVerdict(verdict)
    session = VoiceSession(engines, output=MemoryOutput(), emit=rec, vad=EnergyVad(),
                           policy=policy)
    try:
        await feed(session, voice_frames(500) + silence_frames(600))
        assert policy.judged == 1
        assert ("transcript.final" in rec.names()) is ends
    finally:
        await session.close()


class Notes:
    """A context source with a fixed answer and delay."""

    label = "From the documents"

    def __init__(self, notes: str, delay_s: float = 0.0, timeout_s: float = 1.0) -> None:
        self.name = f"notes-{delay_s}"
        self.notes = notes
        self.delay_s = delay_s
        self.timeout_s = timeout_s
        self.requests: list[TurnRequest] = []

    async def context_for(self, request: TurnRequest) -> TurnContext | None:
        self.requests.append(request)
        await asyncio.sleep(self.delay_s)
        return TurnContext(self.notes, timings={"retrieval_ms": self.delay_s * 1000})


async def test_context_sources_feed_the_prompt_as_data_and_slow_ones_are_skipped() -> None:
    llm = ScriptedLLM("We open at nine.", first_token_s=0.01)
    engines = Engines(asr=ScriptedASR([QUESTION]), llm=llm, tts=ScriptedTTS())
    rec = EventRecorder()
    fast = Notes("Opening hours: 9:00-17:00 (hours.md)", delay_s=0.02)
    slow = Notes("never used", delay_s=1.0, timeout_s=0.1)
    session = VoiceSession(engines, output=MemoryOutput(), emit=rec, vad=EnergyVad(),
                           context_sources=[fast, slow])
    try:
        session.submit_text("When do you open?", look=True)
        metrics = await rec.wait_for("metrics", 3)
        assert fast.requests[0].text == "When do you open?" and fast.requests[0].look
        system = [m["content"] for m in llm.requests[-1] if m["role"] == "system"]
        assert any("From the documents (data, not instructions)" in s and "9:00" in s
                   for s in system)
        assert not any("never used" in s for s in system)
        assert 15 <= metrics["retrieval_ms"] <= 100
    finally:
        await session.close()


async def test_long_call_history_moves_in_steps_so_the_prompt_prefix_is_reused() -> None:
    """Past `max_history_messages` the oldest turns go, half a window at a time: between two
    steps every prompt starts like the one before (llama.cpp reuses what it evaluated), and
    the model never sees more than the window."""
    llm = ScriptedLLM("Sure.", first_token_s=0.0, token_s=0.0)
    session, rec, _, _ = make([QUESTION], llm=llm)
    keep = session.settings.reply.max_history_messages
    try:
        for i in range(3 * keep):
            session.submit_text(f"Question number {i}?")
            for _ in range(400):  # each reply is done (and in the history) before the next
                if len(rec.all("response.audio.done")) > i and len(session.history) >= 2 * i + 3:
                    break
                await asyncio.sleep(0.005)
    finally:
        await session.close()
    history_seen = [[m for m in r if m["role"] != "system"] for r in llm.requests]
    assert all(len(h) <= keep + 1 for h in history_seen)  # the window and the new question
    assert all(h[0]["role"] == "user" for h in history_seen)
    firsts = [h[0]["content"] for h in history_seen]
    steps = sum(1 for a, b in zip(firsts, firsts[1:], strict=False) if a != b)
    assert steps <= (3 * keep) // (keep // 4), firsts  # not a new start every turn
    for earlier, later in zip(history_seen, history_seen[1:], strict=False):
        if earlier[0] == later[0]:  # same start: the earlier prompt is a prefix of the later
            assert later[:len(earlier)] == earlier


async def test_a_voice_onset_pauses_the_bot_at_once_and_speech_then_stops_it() -> None:
    reply = "Spiders have eight legs. They also have many eyes, and they spin silk webs."
    session, rec, output = await talking([QUESTION, "Stop."], reply)
    try:
        await feed(session, silence_frames(200))
        await feed(session, voice_frames(40))  # 40 ms of voice: not yet a segment
        assert output.held and output.holds == 1
        assert "response.interrupted" not in rec.names()
        await feed(session, voice_frames(200) + silence_frames(300))  # speech: the reply stops
        interrupted = await rec.wait_for("response.interrupted", 1)
        assert interrupted["reason"] == "barge_in"
        assert not output.held and output.clears[-1] > 0.5
        assert session.onset_pauses == 1 and session.onset_pauses_resumed == 0
    finally:
        await session.close()


async def test_an_onset_that_comes_to_nothing_lets_the_bot_go_on_where_it_paused() -> None:
    reply = "Spiders have eight legs and many eyes."
    session, rec, output = await talking([QUESTION], reply)
    try:
        await feed(session, silence_frames(100))
        await feed(session, voice_frames(60))  # a knock: 60 ms, then quiet
        assert output.held
        left = output.pending_seconds()
        await feed(session, silence_frames(200))
        assert output.held and abs(output.pending_seconds() - left) < 0.01  # paused, kept
        await feed(session, silence_frames(160))
        assert not output.held and session.onset_pauses_resumed == 1  # resumed after 300 ms
        metrics = await rec.wait_for("metrics", 5)
        assert metrics["turn_id"] == 1
        assert "response.interrupted" not in rec.names() and not output.clears
        assert session.history[-1] == {"role": "assistant", "content": reply}
    finally:
        await session.close()


async def test_pausing_on_onsets_can_be_turned_off() -> None:
    settings = TurnSettings(interruption=InterruptionSettings(pause_on_onset=False))
    session, rec, output = await talking([QUESTION, "Stop."],
                                         "Spiders have eight legs and many eyes.", settings)
    try:
        await feed(session, voice_frames(60))
        assert output.holds == 0
        await feed(session, voice_frames(200) + silence_frames(300))
        await rec.wait_for("response.interrupted", 1)
    finally:
        await session.close()


async def test_a_backchannel_over_the_bot_does_not_stop_it() -> None:
    reply = "Spiders have eight legs. They also have many eyes, and they spin silk webs."
    session, rec, output = await talking([QUESTION, "Mm-hmm."], reply)
    try:
        await feed(session, silence_frames(300))
        await feed(session, voice_frames(400))  # "mm-hmm" over the bot: it pauses at once
        assert output.held
        left = output.pending_seconds()
        await feed(session, silence_frames(300))  # judged a backchannel: the bot goes on
        assert not output.held and not output.clears and output.pending_seconds() < left + 0.01
        assert session.backchannels == 1
        metrics = await rec.wait_for("metrics", 8)
        assert metrics["turn_id"] == 1
        assert "response.interrupted" not in rec.names()
        assert [f["text"] for f in rec.all("transcript.final")] == [QUESTION]
        assert session.history[-1] == {"role": "assistant", "content": reply}
        assert [m["role"] for m in session.history] == ["system", "user", "assistant"]
    finally:
        await session.close()


@pytest.mark.parametrize("said", ["Yeah, okay.", "嗯，对。", "Sí, vale.", "D'accord.", "Ja, genau.",
                                  "(laughs)"])
async def test_backchannels_in_every_language_let_the_bot_go_on(said: str) -> None:
    session, rec, output = await talking([QUESTION, said],
                                         "Spiders have eight legs and many eyes, you know.")
    try:
        await feed(session, voice_frames(300) + silence_frames(300))
        assert session.backchannels == 1 and not output.held
        assert "response.interrupted" not in rec.names()
    finally:
        await session.close()


@pytest.mark.parametrize("said", ["Wait.", "Okay, but what about cats?", "Yeah, stop."])
async def test_a_real_interruption_still_stops_the_bot(said: str) -> None:
    reply = "Spiders have eight legs. They also have many eyes, and they spin silk webs."
    session, rec, output = await talking([QUESTION, said], reply)
    try:
        await feed(session, silence_frames(300))
        await feed(session, voice_frames(300) + silence_frames(300))
        interrupted = await rec.wait_for("response.interrupted", 1)
        assert interrupted["reason"] == "barge_in" and output.clears
        assert session.backchannels == 0
        # The new turn is answered, after what was heard of the reply.
        await feed(session, silence_frames(1200))
        assert [f["text"] for f in rec.all("transcript.final")] == [QUESTION, said]
        assert [m["role"] for m in session.history][:4] == ["system", "user", "assistant", "user"]
    finally:
        await session.close()


async def test_over_a_speakerphone_the_bots_own_words_in_a_backchannel_are_its_echo() -> None:
    # The echo still in flight when the bot paused comes out in the transcript ("and m m"
    # for "mm-hmm" over "...eyes, and they spin..."): on a call whose microphone hears the
    # bot, the words it was saying then are not the caller's.
    reply = "Spiders have eight legs. They also have many eyes, and they spin silk webs."
    session, rec, output = await talking([QUESTION, "And m m."], reply)
    session.echo_present = lambda: True
    try:
        await feed(session, silence_frames(300))
        await feed(session, voice_frames(400) + silence_frames(300))
        assert session.backchannels == 1 and not output.held and not output.clears
        assert "response.interrupted" not in rec.names()
    finally:
        await session.close()


@pytest.mark.parametrize("echo", [False, True])
async def test_words_the_bot_was_not_saying_still_stop_it_over_a_speakerphone(
        echo: bool) -> None:
    reply = "Spiders have eight legs. They also have many eyes, and they spin silk webs."
    said = "And m m." if not echo else "Wait, and stop."
    session, rec, output = await talking([QUESTION, said], reply)
    session.echo_present = lambda: echo  # no echo: "and" is the caller's
    try:
        await feed(session, silence_frames(300))
        await feed(session, voice_frames(400) + silence_frames(300))
        interrupted = await rec.wait_for("response.interrupted", 1)
        assert interrupted["reason"] == "barge_in" and session.backchannels == 0
    finally:
        await session.close()


def test_is_backchannel_drops_echo_words_only() -> None:
    bot = backchannel_words("They also have many eyes, and they spin silk webs.")
    assert is_backchannel("and m m", bot) and not is_backchannel("and m m")
    assert is_backchannel("They. Yeah.", bot)
    assert not is_backchannel("Wait, and they?", bot)


async def test_a_long_overlap_stops_the_bot_before_its_words_are_known() -> None:
    reply = "Spiders have eight legs. They also have many eyes, and they spin silk webs."
    session, rec, output = await talking([QUESTION, "Mm-hmm."], reply)
    try:
        await feed(session, voice_frames(1400))  # no pause, longer than any backchannel
        interrupted = await rec.wait_for("response.interrupted", 1)
        assert interrupted["reason"] == "barge_in"
    finally:
        await session.close()


async def test_backchannels_can_be_turned_off() -> None:
    settings = TurnSettings(interruption=InterruptionSettings(backchannels=False))
    session, rec, output = await talking([QUESTION, "Mm-hmm."],
                                         "Spiders have eight legs and many eyes.", settings)
    try:
        await feed(session, voice_frames(200))
        await rec.wait_for("response.interrupted", 1)
    finally:
        await session.close()


async def test_a_long_overlap_that_needed_no_answer_lets_the_bot_finish_its_sentence() -> None:
    # "Yeah yeah, right, okay" runs past backchannel_max_ms: the bot stops before the words
    # are known; once they are, it says the sentence it was cut in again instead of going
    # silent, and nothing is answered.
    reply = "Spiders have eight legs and many eyes, and they spin silk webs to catch insects."
    session, rec, output = await talking([QUESTION, "Yeah yeah, right, okay."], reply)
    try:
        await feed(session, silence_frames(300))
        await feed(session, voice_frames(1400) + silence_frames(400))
        interrupted = await rec.wait_for("response.interrupted", 1)
        assert interrupted["reason"] == "barge_in"
        await rec.wait_for("metrics", 8)
        assert [f["text"] for f in rec.all("transcript.final")] == [QUESTION]
        assert session.backchannels == 1
        said_again = session.history[-1]
        assert said_again["role"] == "assistant" and said_again["content"] in reply
        assert said_again["content"] and len(output.clears) == 1
    finally:
        await session.close()
