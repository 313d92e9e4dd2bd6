"""The Smart Turn end-of-turn model and policy, the turn-quality set, and Whisper's prompt.

The model is the real Smart Turn v3.2 ONNX (pipecat-ai installed --no-deps); the audio is the
committed turn-quality set (bench/turnset), real LibriVox speech cut at a pause.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from callbot.pipeline.asr.prompt import asr_prompt
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
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.settings import EndpointingSettings, SettingsError
from callbot.pipeline.smart_turn import SmartTurnModel, smart_turn_available
from callbot.pipeline.turn_policy import (
    SmartTurnPolicy,
    TranscriptRule,
    default_policy,
    is_short_answer,
)

from .test_turns_fast import feed

SET = Path(__file__).resolve().parent.parent / "bench" / "turnset"
needs_model = pytest.mark.skipif(not smart_turn_available(),
                                 reason="pip install --no-deps pipecat-ai==1.14.0")


class FixedModel:
    """A turn model with a fixed verdict, for the policy arithmetic (the real model's
    verdicts are tested on real speech below)."""

    name = "fixed"

    def __init__(self, p: float) -> None:
        self.p = p
        self.seen: list[int] = []

    async def predict(self, pcm: np.ndarray) -> float:
        self.seen.append(len(pcm))
        return self.p

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass


def manifest() -> dict[str, dict[str, object]]:
    data = json.loads((SET / "manifest.json").read_text())
    return {u["id"]: u for u in data["utterances"]}


def read_set_audio(uid: str) -> np.ndarray:
    item = manifest()[uid]
    raw = subprocess.run(["sox", str(SET / str(item["file"])), "-t", "raw", "-e", "signed",
                          "-b", "16", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.int16)


def test_the_quality_set_is_committed_with_its_manifest() -> None:
    items = manifest()
    assert len(items) >= 30
    categories = {str(u["category"]) for u in items.values()}
    assert {"mid_pause", "hesitation", "trailing_conjunction", "list",
            "short_complete"} <= categories
    for item in items.values():
        assert (SET / str(item["file"])).is_file()
        assert 10 <= float(item["snr_db"]) <= 20  # type: ignore[arg-type]
        pauses = item["pauses"]
        assert isinstance(pauses, list)
        assert all(end <= float(item["speech_end_s"]) for _, end in pauses)  # type: ignore[arg-type]


@needs_model
def test_smart_turn_hears_a_pause_mid_sentence_and_a_finished_sentence() -> None:
    model = SmartTurnModel()
    try:
        item = manifest()["real-libri-0920"]  # a LibriVox sentence, stopped mid-way
        pcm = read_set_audio("real-libri-0920")
        pause_start = float(item["pauses"][0][0])  # type: ignore[index]
        mid = model.predict_sync(pcm[: int((pause_start + 0.1) * 16_000)])
        end = model.predict_sync(pcm[: int((float(item["speech_end_s"]) + 0.1)  # type: ignore[arg-type]
                                           * 16_000)])
        assert mid < 0.3 < 0.7 < end, (mid, end)
    finally:
        model.close()


def test_the_combined_policy_takes_both_signals() -> None:
    settings = EndpointingSettings()
    policy = SmartTurnPolicy(FixedModel(0.5), settings)
    rule = TranscriptRule(settings)
    # no transcript yet: only a long silence decides
    assert policy.required_silence_ms(None, 0.99) == settings.incomplete_end_ms
    # not judged yet: the transcript rule alone
    for text in ("What time is it?", "I want a table.", "I want the pasta and"):
        assert policy.required_silence_ms(text, None) == rule.required_silence_ms(text, None)
    # an unfinished transcript waits, whatever the audio says
    assert policy.required_silence_ms("Hello there.", 0.98) == settings.incomplete_end_ms
    assert policy.required_silence_ms("I want the pasta and", 0.99) == settings.incomplete_end_ms
    # finished by both: quick; the audio model unsure: longer; sure it is not: the long wait
    assert policy.required_silence_ms("What time is it?", 1.0) == settings.question_end_ms
    sure = policy.required_silence_ms("I'd like to book a table.", 1.0)
    unsure = policy.required_silence_ms("I'd like to book a table.", 0.5)
    assert sure == settings.turn_model_statement_end_ms < unsure
    assert policy.required_silence_ms("I'd like to book", 0.0) == settings.incomplete_end_ms
    # a short answer the audio calls finished is not a greeting waiting for more
    assert policy.required_silence_ms("Yes.", 0.9) < settings.statement_end_ms
    assert policy.required_silence_ms("Yes.", 0.1) == settings.incomplete_end_ms
    assert is_short_answer("No thanks.") and not is_short_answer("Hello there.")


def test_policy_setting_picks_the_policy() -> None:
    model = FixedModel(0.9)
    assert default_policy(EndpointingSettings(policy="transcript"), model).name == "transcript"
    assert default_policy(EndpointingSettings(policy="smart_turn"), model).name == "smart_turn"
    assert default_policy(EndpointingSettings(policy="smart_turn"), None).name == "transcript"
    only = default_policy(EndpointingSettings(policy="smart_turn_only"), model)
    assert only.required_silence_ms(None, 0.9) == EndpointingSettings().question_end_ms
    with pytest.raises(SettingsError, match="policy"):
        EndpointingSettings(policy="fastest")


@pytest.mark.parametrize(("p", "ends"), [(0.95, True), (0.02, False)])
async def test_session_asks_the_turn_model_at_a_pause(p: float, ends: bool) -> None:
    """A statement after 600 ms of silence: over if the model hears it finished, not yet if
    it hears it unfinished (the policy then waits for the long silence)."""
    model = FixedModel(p)
    engines = Engines(asr=ScriptedASR(["I'd like to book"], final_s=0.05),
                      llm=ScriptedLLM("Sure."), tts=ScriptedTTS(), turn_model=model)
    rec = EventRecorder()
    session = VoiceSession(engines, output=MemoryOutput(), emit=rec, vad=EnergyVad(),
                           settings=None)
    assert session.policy.name == "smart_turn"  # the default, when a model is loaded
    try:
        await feed(session, voice_frames(600) + silence_frames(600))
        assert len(model.seen) == 1
        assert ("transcript.final" in rec.names()) is ends
    finally:
        await session.close()


async def test_the_bot_s_last_words_prompt_the_recognizer() -> None:
    asr = ScriptedASR(["Which city?", "Paris."], final_s=0.02)
    engines = Engines(asr=asr, llm=ScriptedLLM("Which city are you flying to?"),
                      tts=ScriptedTTS(seconds_per_char=0.001))
    rec = EventRecorder()
    session = VoiceSession(engines, output=MemoryOutput(), emit=rec, vad=EnergyVad())
    try:
        await feed(session, voice_frames(400) + silence_frames(1400))
        await rec.wait_for("metrics", 3)
        await feed(session, voice_frames(400) + silence_frames(1400))
        finals = [prompt for (partial, _), prompt in zip(asr.calls, asr.prompts, strict=True)
                  if not partial]
        assert finals[0] is None  # nothing said yet
        assert finals[-1] == "Which city are you flying to?"
    finally:
        await session.close()
    history = [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]
    assert asr_prompt(history, 2) is None  # type: ignore[arg-type]


def test_a_prompted_decode_that_repeats_itself_is_caught() -> None:
    from callbot.pipeline.asr.whisper import repeats_itself

    assert repeats_itself("Medium, please? Medium, please?")
    assert not repeats_itself("I'm flying to Paris on Friday.")
    assert not repeats_itself("A table for four, please.")


def test_a_sentence_said_twice_is_kept_once() -> None:
    """The prompted decode sometimes says the whole sentence twice: keep it once, without a
    second decode (it cost ~150 ms of the turn)."""
    from callbot.pipeline.asr.whisper import said_twice

    assert said_twice("What is the capital of France? What is the capital of France?") == (
        "What is the capital of France?")
    assert said_twice("Medium, please? Medium, please?") == "Medium, please?"
    assert said_twice("Yes. Yes.") is None  # too short to tell from a real "yes, yes"
    assert said_twice("I'm flying to Paris on Friday.") is None
    assert said_twice("one two three one two four") is None
