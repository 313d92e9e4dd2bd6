"""SpeechSegmenter + WebRtcVad on real (synthetic) speech, silence, noise and clicks."""

from __future__ import annotations

import numpy as np
import pytest

from callbot.pipeline.audio import FRAME_MS, FRAME_SAMPLES, PIPELINE_RATE
from callbot.pipeline.vad import (
    SegmenterSettings,
    SegmentEvent,
    SileroVad,
    SpeechSegmenter,
    WebRtcVad,
    speech_segmenter,
)
from support import speech

LEAD_S = 0.5


def speech_bounds_ms(pcm: np.ndarray, threshold: int = 300) -> tuple[float, float]:
    """First and last sample louder than `threshold`, in ms."""
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) > threshold)[0]
    return loud[0] * 1000 / PIPELINE_RATE, loud[-1] * 1000 / PIPELINE_RATE


def run(pcm: np.ndarray, segmenter: SpeechSegmenter | None = None, *, onsets: bool = False
        ) -> tuple[SpeechSegmenter, list[tuple[float, SegmentEvent]]]:
    """Feed all whole frames; return the events with the time (ms) the frame ended at
    (voice onsets only with `onsets`: the segment's edges are what most tests pin)."""
    seg = segmenter or SpeechSegmenter(WebRtcVad(2), SegmenterSettings())
    events = []
    for i in range(len(pcm) // FRAME_SAMPLES):
        event = seg.feed(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        if event is not None and (onsets or event is not SegmentEvent.ONSET):
            events.append(((i + 1) * FRAME_MS, event))
    return seg, events


@pytest.fixture(scope="module")
def question() -> speech.Clip:
    return speech.espeak("How many legs does a spider have?", PIPELINE_RATE).padded(LEAD_S, 1.0)


def test_start_and_pause_track_the_speech(question: speech.Clip) -> None:
    onset, end = speech_bounds_ms(question.pcm)
    seg, events = run(question.pcm)
    assert [e for _, e in events] == [SegmentEvent.STARTED, SegmentEvent.PAUSED]
    (started_at, _), (paused_at, _) = events
    assert onset <= started_at <= onset + 150, (onset, started_at)
    pause_ms = seg.settings.pause_ms
    assert end + pause_ms <= paused_at <= end + pause_ms + 150, (end, paused_at)
    assert seg.in_segment and seg.paused
    assert seg.silence_ms >= 800  # the 1 s of trailing silence, minus the VAD's hangover


def test_voiced_audio_covers_the_utterance(question: speech.Clip) -> None:
    onset, end = speech_bounds_ms(question.pcm)
    seg, _ = run(question.pcm)
    segment = seg.segment_audio
    voiced = seg.voiced_audio()
    # The segment begins with the pre-roll, before the onset was detected, and (while still
    # open) holds all the trailing silence; voiced_audio() cuts that silence down.
    segment_start_ms = len(question.pcm) // FRAME_SAMPLES * FRAME_MS - seg.segment_ms
    assert segment_start_ms <= onset - 20
    assert segment_start_ms + len(voiced) * 1000 / PIPELINE_RATE >= end
    assert len(voiced) * 1000 / PIPELINE_RATE <= end - segment_start_ms + 300
    assert np.array_equal(voiced, segment[: len(voiced)])
    speech_rms = np.sqrt(np.mean(voiced.astype(np.float64) ** 2))
    assert speech_rms > 500
    # close() hands back the same audio and resets for the next turn.
    assert np.array_equal(seg.close(), voiced)
    assert not seg.in_segment and seg.segment_ms == 0
    assert seg.voiced_audio().size == 0


def test_short_pause_between_two_utterances_resumes_the_segment() -> None:
    first = speech.espeak("Hello there.", PIPELINE_RATE)
    second = speech.espeak("How are you today?", PIPELINE_RATE)
    gap = np.zeros(int(0.3 * PIPELINE_RATE), dtype=np.int16)
    lead = np.zeros(int(LEAD_S * PIPELINE_RATE), dtype=np.int16)
    tail = np.zeros(PIPELINE_RATE, dtype=np.int16)
    pcm = np.concatenate([lead, first.pcm, gap, second.pcm, tail])
    second_onset = (len(lead) + len(first.pcm) + len(gap)) * 1000 / PIPELINE_RATE
    second_onset += speech_bounds_ms(second.pcm)[0]

    seg, events = run(pcm)
    assert [e for _, e in events] == [
        SegmentEvent.STARTED, SegmentEvent.PAUSED, SegmentEvent.RESUMED, SegmentEvent.PAUSED,
    ]
    resumed_at = events[2][0]
    assert second_onset <= resumed_at <= second_onset + 150
    # One segment holds both utterances.
    assert len(seg.voiced_audio()) / PIPELINE_RATE >= (len(first.pcm) + len(second.pcm)) / (
        PIPELINE_RATE
    ) - 0.6


def test_segmenter_is_reusable_after_close(question: speech.Clip) -> None:
    seg, _ = run(question.pcm)
    seg.close()
    _, events = run(question.pcm, seg)
    assert [e for _, e in events] == [SegmentEvent.STARTED, SegmentEvent.PAUSED]


def test_too_long_segment_is_reported() -> None:
    settings = SegmenterSettings(max_segment_s=1.0)
    clip = speech.espeak("How many legs does a spider have?", PIPELINE_RATE).padded(LEAD_S, 0)
    _, events = run(clip.pcm, SpeechSegmenter(WebRtcVad(2), settings))
    assert events[0][1] is SegmentEvent.STARTED
    assert SegmentEvent.TOO_LONG in [e for _, e in events]
    too_long_at = next(t for t, e in events if e is SegmentEvent.TOO_LONG)
    assert too_long_at <= events[0][0] + 1000


def test_silence_gives_no_segment() -> None:
    seg, events = run(np.zeros(3 * PIPELINE_RATE, dtype=np.int16))
    assert events == [] and not seg.in_segment


@pytest.mark.parametrize("std", [10, 30, 100, 300])
def test_steady_white_noise_gives_no_segment(std: float) -> None:
    for seed in range(5):
        noise = np.random.default_rng(seed).standard_normal(3 * PIPELINE_RATE) * std
        seg, events = run(noise.astype(np.int16))
        assert events == [], (std, seed, events)


def test_noise_starting_after_silence_gives_no_segment() -> None:
    noise = np.random.default_rng(1).standard_normal(2 * PIPELINE_RATE) * 100
    pcm = np.concatenate([np.zeros(PIPELINE_RATE), noise]).astype(np.int16)
    _, events = run(pcm)
    assert events == []


def test_a_click_does_not_open_a_segment() -> None:
    """webrtcvad marks ~80 ms voiced after a single loud 20 ms frame (its hangover)."""
    for seed in range(10):
        pcm = np.zeros(2 * PIPELINE_RATE, dtype=np.int16)
        click = np.random.default_rng(seed).standard_normal(FRAME_SAMPLES) * 3000
        pcm[PIPELINE_RATE : PIPELINE_RATE + FRAME_SAMPLES] = click.astype(np.int16)
        _, events = run(pcm)
        assert events == [], seed


def test_bad_frame_size_raises() -> None:
    seg = SpeechSegmenter(WebRtcVad(2), SegmenterSettings())
    with pytest.raises(ValueError, match="320"):
        seg.feed(np.zeros(FRAME_SAMPLES - 1, dtype=np.int16))
    with pytest.raises(ValueError):
        seg.feed(np.zeros((2, FRAME_SAMPLES // 2), dtype=np.int16))
    assert seg.frames_seen == 0


@pytest.mark.parametrize("level", [-1, 4])
def test_bad_aggressiveness_raises(level: int) -> None:
    with pytest.raises(ValueError):
        WebRtcVad(level)


def pause_at_ms(pcm: np.ndarray, settings: SegmenterSettings) -> float:
    _, events = run(pcm, SpeechSegmenter(WebRtcVad(2), settings))
    return next(t for t, e in events if e is SegmentEvent.PAUSED)


def test_energy_gate_ends_speech_before_the_vad_hangover(question: speech.Clip) -> None:
    """webrtcvad keeps calling frames voiced for ~100 ms after the last word; the gate ends the
    speech where its energy ends, so the pause (and the reply) comes that much sooner."""
    _, end = speech_bounds_ms(question.pcm)
    gated = pause_at_ms(question.pcm, SegmenterSettings())
    plain = pause_at_ms(question.pcm, SegmenterSettings(energy_gate=False))
    pause_ms = SegmenterSettings().pause_ms
    assert plain - gated >= 60, (plain, gated)
    assert end + pause_ms - 20 <= gated <= end + pause_ms + 60, (end, gated)


def with_noise(pcm: np.ndarray, snr_db: float, kind: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = pcm.astype(np.float64)
    speech_rms = np.sqrt(np.mean(np.square(x[np.abs(x) > 300])))
    if kind == "white":
        noise = rng.normal(0, 1, len(x))
    else:  # mains hum: 50 Hz and its harmonics, as a cheap microphone picks it up
        t = np.arange(len(x)) / PIPELINE_RATE
        noise = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in range(1, 8))
    noise *= speech_rms / 10 ** (snr_db / 20) / np.sqrt(np.mean(np.square(noise)))
    return np.clip(x + noise, -32768, 32767).astype(np.int16)


@pytest.mark.parametrize(("kind", "snr_db"), [("white", 15), ("white", 10), ("hum", 20)])
def test_energy_gate_leaves_noisy_speech_to_the_vad(question: speech.Clip, kind: str,
                                                    snr_db: float) -> None:
    """Noise 10-20 dB under the speech is above the gate: the VAD alone decides, so the gate
    never cuts noisy speech short (a noise-floor gate did, mid-sentence: tried and dropped)."""
    noisy = with_noise(np.concatenate([question.pcm, np.zeros(PIPELINE_RATE, np.int16)]),
                       snr_db, kind)
    _, gated = run(noisy)
    _, plain = run(noisy, SpeechSegmenter(WebRtcVad(2), SegmenterSettings(energy_gate=False)))
    assert gated == plain


def test_silero_confirms_speech_and_rejects_steady_hum(question: speech.Clip) -> None:
    """Mains hum 10 dB under the voice: webrtcvad calls it speech before and after the words
    (the turn would never end); webrtcvad + Silero starts at the words and pauses after them."""
    _, end = speech_bounds_ms(question.pcm)
    onset, _ = speech_bounds_ms(question.pcm)
    noisy = with_noise(np.concatenate([question.pcm, np.zeros(PIPELINE_RATE, np.int16)]),
                       10, "hum")
    _, plain = run(noisy, speech_segmenter(None, 2, False, SegmenterSettings()))
    assert [e for _, e in plain] == [SegmentEvent.STARTED], plain  # opened on hum, never ends
    assert plain[0][0] < onset - 100
    _, confirmed = run(noisy, speech_segmenter(None, 2, True, SegmenterSettings()))
    assert [e for _, e in confirmed] == [SegmentEvent.STARTED, SegmentEvent.PAUSED], confirmed
    (started, _), (paused, _) = confirmed
    assert onset <= started <= onset + 200, (onset, started)
    pause_ms = SegmenterSettings().pause_ms
    assert end + pause_ms - 40 <= paused <= end + pause_ms + 150, (end, paused)


def test_silero_alone_on_silence_and_speech(question: speech.Clip) -> None:
    vad = SileroVad()
    frames = [question.pcm[i:i + FRAME_SAMPLES]
              for i in range(0, len(question.pcm) - FRAME_SAMPLES, FRAME_SAMPLES)]
    decisions = [vad.is_speech(f) for f in frames]
    lead = int(LEAD_S * 1000 / FRAME_MS)
    assert not any(decisions[: lead - 2])  # the half second of silence before
    assert sum(decisions) * FRAME_MS >= 1000  # most of the ~1.7 s question
    assert not any(decisions[-20:])  # the trailing second of silence, after its release


def test_a_voice_onset_comes_80_ms_before_the_segment_opens(question: speech.Clip) -> None:
    onset, _ = speech_bounds_ms(question.pcm)
    _, events = run(question.pcm, onsets=True)
    kinds = [e for _, e in events]
    assert kinds[:2] == [SegmentEvent.ONSET, SegmentEvent.STARTED], events
    assert SegmentEvent.ONSET not in kinds[2:]  # inside the segment: edges only
    (onset_at, _), (started_at, _) = events[:2]
    assert onset <= onset_at <= onset + 80, (onset, onset_at)
    assert started_at - onset_at >= 60, events


@pytest.mark.parametrize(("kind", "snr_db"), [("hum", 10), ("hum", 20), ("white", 15)])
def test_steady_noise_makes_at_most_one_onset_when_it_starts(question: speech.Clip, kind: str,
                                                             snr_db: float) -> None:
    """webrtcvad calls mains hum speech at times, but noise does not rise above itself: it is
    an onset once, when it switches on, then the background (a bot talking to a caller in
    hum is not paused again and again). A voice over it is an onset at the latest when the
    segment opens (an espeak "How" rises too slowly over 10 dB hum to be one earlier)."""
    noisy = with_noise(question.pcm, snr_db, kind)
    hum_only = noisy[: int(LEAD_S * PIPELINE_RATE) - FRAME_SAMPLES * 4]  # whole 50 Hz periods
    seg = speech_segmenter(None, 2, True, SegmenterSettings())
    _, before = run(np.tile(hum_only, 8), seg, onsets=True)  # 3.4 s of noise alone
    assert [e for _, e in before] in ([], [SegmentEvent.ONSET]), before
    assert all(t <= 100 for t, _ in before)
    _, events = run(noisy, seg, onsets=True)
    started = next(t for t, e in events if e is SegmentEvent.STARTED)
    onsets = [t for t, e in events if e is SegmentEvent.ONSET]
    assert len(onsets) <= 1 and all(t < started for t in onsets), events


def test_onsets_can_be_turned_off(question: speech.Clip) -> None:
    seg = SpeechSegmenter(WebRtcVad(2), SegmenterSettings(onset_ms=0))
    _, events = run(question.pcm, seg, onsets=True)
    assert [e for _, e in events] == [SegmentEvent.STARTED, SegmentEvent.PAUSED]
