"""rtc.tracks.PacedAudioTrack (the bot's outgoing audio) and the fast RFC 6465 audio level."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from types import ModuleType

import aiortc
import numpy as np
import pytest
from aiortc import rtcrtpsender, rtp
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from callbot.rtc import audio_level
from callbot.rtc.tracks import FRAME_SAMPLES, WEBRTC_RATE, PacedAudioTrack


def samples_of(frame: AudioFrame) -> np.ndarray:
    return np.frombuffer(bytes(frame.planes[0]), dtype=np.int16)[: frame.samples].copy()


async def test_fifty_frames_take_one_second_of_wall_clock() -> None:
    track = PacedAudioTrack()
    first = await track.recv()  # starts the clock
    started = time.monotonic()
    frames = [await track.recv() for _ in range(50)]
    elapsed = time.monotonic() - started
    assert 0.97 <= elapsed <= 1.25, elapsed  # paced: not as fast as possible, not slower
    for frame in [first, *frames]:
        assert frame.samples == FRAME_SAMPLES == 960
        assert frame.sample_rate == WEBRTC_RATE == 48_000
        assert frame.format.name == "s16" and frame.layout.name == "mono"
        assert float(frame.time_base) == pytest.approx(1 / 48_000)
    pts = [f.pts for f in [first, *frames]]
    assert pts == list(range(0, 51 * 960, 960))
    assert track.frames_sent == 51
    track.stop()


async def test_silence_when_nothing_is_queued() -> None:
    track = PacedAudioTrack()
    for _ in range(3):
        assert not samples_of(await track.recv()).any()
    assert track.voice_frames_sent == 0
    assert track.pending_seconds() == 0
    track.stop()


async def test_enqueued_audio_comes_out_in_order_then_silence() -> None:
    track = PacedAudioTrack()
    audio = (np.arange(2 * FRAME_SAMPLES + 100) % 2000 + 1).astype(np.int16)  # never zero
    track.enqueue(audio, WEBRTC_RATE)
    assert track.pending_seconds() == pytest.approx(len(audio) / WEBRTC_RATE)
    out = np.concatenate([samples_of(await track.recv()) for _ in range(4)])
    assert np.array_equal(out[: len(audio)], audio)
    assert not out[len(audio) :].any()  # the partial last frame is padded with silence
    assert track.voice_frames_sent == 3
    assert track.pending_seconds() == 0
    track.stop()


async def test_enqueue_resamples_to_48k() -> None:
    track = PacedAudioTrack()
    t = np.arange(22_050) / 22_050
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)  # 1 s at Piper's rate
    track.enqueue(tone, 22_050)
    assert track.pending_seconds() == pytest.approx(1.0, abs=0.005)
    out = samples_of(await track.recv())
    assert 8000 * 0.6 < np.sqrt(np.mean(out[200:].astype(np.float64) ** 2)) < 8000 * 0.8
    track.enqueue(np.zeros(0, np.int16), 22_050)  # nothing to add
    assert track.pending_seconds() == pytest.approx(1.0 - 0.02, abs=0.005)
    track.stop()


async def test_clear_drops_queued_audio_and_reports_seconds() -> None:
    track = PacedAudioTrack()
    track.enqueue(np.full(WEBRTC_RATE, 1000, np.int16), WEBRTC_RATE)  # 1 s
    track.enqueue(np.full(WEBRTC_RATE // 2, 1000, np.int16), WEBRTC_RATE)  # 0.5 s
    for _ in range(5):
        assert samples_of(await track.recv()).all()
    dropped = track.clear()
    assert dropped == pytest.approx(1.5 - 5 * 0.02)
    assert track.pending_seconds() == 0
    assert not samples_of(await track.recv()).any()  # silent from the next frame on
    assert track.clear() == 0.0
    await asyncio.wait_for(track.wait_drained(), 0.1)
    track.stop()


async def test_wait_drained_completes_after_the_audio_is_pulled() -> None:
    track = PacedAudioTrack()
    await asyncio.wait_for(track.wait_drained(), 0.1)  # nothing queued: drained already
    track.enqueue(np.full(5 * FRAME_SAMPLES, 500, np.int16), WEBRTC_RATE)
    waiter = asyncio.create_task(track.wait_drained())
    for _ in range(4):
        await track.recv()
        await asyncio.sleep(0)
        assert not waiter.done()
    await track.recv()
    await asyncio.wait_for(waiter, 0.5)
    track.stop()


async def test_stalled_reader_does_not_get_a_burst() -> None:
    """If aiortc stops pulling for a while, pacing restarts instead of catching up at once."""
    track = PacedAudioTrack()
    await track.recv()
    await asyncio.sleep(0.3)
    await track.recv()  # late: the clock resyncs here
    started = time.monotonic()
    for _ in range(5):
        await track.recv()
    assert time.monotonic() - started >= 0.08
    track.stop()


async def test_stopped_track_raises() -> None:
    track = PacedAudioTrack()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def _original_aiortc_rtp() -> ModuleType:
    """A private copy of aiortc.rtp, loaded from its source: its compute_audio_level_dbov is
    aiortc's own, whether or not some app in this process already called install()."""
    spec = importlib.util.find_spec("aiortc.rtp")
    assert spec is not None and spec.origin is not None
    copy_spec = importlib.util.spec_from_file_location(
        "aiortc.rtp_original_for_tests", spec.origin
    )
    assert copy_spec is not None and copy_spec.loader is not None
    module = importlib.util.module_from_spec(copy_spec)
    copy_spec.loader.exec_module(module)
    return module


def _frame(samples: np.ndarray) -> AudioFrame:
    frame = AudioFrame(format="s16", layout="mono", samples=len(samples))
    frame.planes[0].update(samples.astype(np.int16).tobytes())
    frame.sample_rate = WEBRTC_RATE
    return frame


def test_fast_audio_level_equals_aiortc() -> None:
    original = _original_aiortc_rtp().compute_audio_level_dbov
    assert original is not audio_level.compute_audio_level_dbov
    rng = np.random.default_rng(0)
    frames = [np.zeros(FRAME_SAMPLES), np.full(FRAME_SAMPLES, 32767),
              np.full(FRAME_SAMPLES, -32768), np.full(FRAME_SAMPLES, 1)]
    for scale in (1, 3, 30, 300, 3000, 30_000):
        frames.append(np.clip(rng.standard_normal(FRAME_SAMPLES) * scale, -32768, 32767))
    frames += [rng.integers(-32768, 32768, FRAME_SAMPLES) for _ in range(20)]
    frames.append(np.clip(rng.standard_normal(FRAME_SAMPLES // 2) * 1000, -32768, 32767))
    levels = []
    for samples in frames:
        frame = _frame(samples)
        level = audio_level.compute_audio_level_dbov(frame)
        assert level == original(frame), samples[:4]
        levels.append(level)
    assert levels[0] == -127 and levels[1] == 0 and levels[2] == 0
    assert len(set(levels)) >= 6  # the cases span the range, not one value


def test_install_patches_what_the_sender_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rtp, "compute_audio_level_dbov", rtp.compute_audio_level_dbov)
    audio_level.install()
    assert rtcrtpsender.rtp is rtp is aiortc.rtp
    assert rtp.compute_audio_level_dbov is audio_level.compute_audio_level_dbov
