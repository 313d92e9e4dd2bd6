"""Voice activity detection and speech segmentation.

`VoiceActivityDetector` is the engine interface (one 20 ms frame -> speech or not);
`SpeechSegmenter` turns its per-frame decisions into speech start / pause / resume events
with pre-roll, so the pipeline can act on a pause before the turn is confirmed over.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import webrtcvad

from .audio import FRAME_MS, FRAME_SAMPLES, PIPELINE_RATE

TRAILING_KEEP_MS = 100  # silence kept after the last voiced frame: Whisper needs the word's tail


class VoiceActivityDetector(Protocol):
    def is_speech(self, frame: np.ndarray) -> bool:
        """`frame`: 20 ms of 16 kHz mono int16."""
        ...


class WebRtcVad:
    def __init__(self, aggressiveness: int = 2) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ValueError("VAD aggressiveness must be 0..3")
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        return bool(self._vad.is_speech(frame.tobytes(), PIPELINE_RATE))


@dataclass(frozen=True)
class SegmenterSettings:
    # Voiced audio within the start window that opens a segment. webrtcvad marks 80-100 ms
    # voiced after any transient (a click, noise onset: its hangover), so ask for more.
    start_ms: int = 120
    start_window_ms: int = 160
    pause_ms: int = 160  # silence after speech that counts as a pause (speculation starts)
    resume_ms: int = 100  # voiced audio after a pause that resumes the segment (webrtcvad
    # calls ~80 ms voiced after a lone click, so less would drop speculation on clicks)
    preroll_ms: int = 240  # audio kept from before the detected start
    max_segment_s: float = 25.0  # Whisper sees at most 30 s; force a turn end before that


class SegmentEvent(enum.Enum):
    STARTED = "started"  # speech began (segment opened)
    PAUSED = "paused"  # silence for pause_ms after speech
    RESUMED = "resumed"  # speech came back after a pause, same segment
    TOO_LONG = "too_long"  # segment hit max_segment_s


class SpeechSegmenter:
    """Feeds 20 ms frames; keeps the current segment's audio; reports edges.

    The segment stays open through pauses: the caller decides when a turn has ended (it may
    wait longer after an incomplete-sounding sentence) and then calls `close()`.
    """

    def __init__(self, vad: VoiceActivityDetector, settings: SegmenterSettings) -> None:
        self._vad = vad
        self.settings = settings
        n_window = max(1, settings.start_window_ms // FRAME_MS)
        self._window: collections.deque[bool] = collections.deque(maxlen=n_window)
        self._preroll: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(1, settings.preroll_ms // FRAME_MS)
        )
        self._frames: list[np.ndarray] = []
        self.in_segment = False
        self.paused = False
        self.silence_ms = 0
        self.frames_seen = 0
        self._voiced_run = 0
        self.last_voiced_frame = 0  # index (in frames_seen) of the last voiced frame

    @property
    def segment_audio(self) -> np.ndarray:
        if not self._frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._frames)

    @property
    def segment_ms(self) -> int:
        return len(self._frames) * FRAME_MS

    def voiced_audio(self) -> np.ndarray:
        """The segment up to 100 ms after its last voiced frame (the rest of the silence cut).

        Depends only on where speech stopped, so a pause and the confirmed end of the same
        turn give identical audio (and the speculative transcript can be reused).
        """
        trailing = max(0, self.silence_ms - TRAILING_KEEP_MS) // FRAME_MS
        frames = self._frames[: len(self._frames) - trailing] if trailing else self._frames
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    def feed(self, frame: np.ndarray) -> SegmentEvent | None:
        if frame.shape != (FRAME_SAMPLES,):
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {frame.shape}")
        self.frames_seen += 1
        voiced = self._vad.is_speech(frame)
        if not self.in_segment:
            self._preroll.append(frame)
            self._window.append(voiced)
            if sum(self._window) * FRAME_MS >= self.settings.start_ms:
                self.in_segment = True
                self.paused = False
                self.silence_ms = 0
                self.last_voiced_frame = self.frames_seen
                self._frames = list(self._preroll)
                self._preroll.clear()
                self._window.clear()
                return SegmentEvent.STARTED
            return None

        self._frames.append(frame)
        self._voiced_run = self._voiced_run + 1 if voiced else 0
        if voiced and not self.paused:
            self.silence_ms = 0
            self.last_voiced_frame = self.frames_seen
        elif voiced and self._voiced_run * FRAME_MS >= self.settings.resume_ms:
            # A lone voiced frame in a pause is a click, not the user talking again.
            self.paused = False
            self.silence_ms = 0
            self.last_voiced_frame = self.frames_seen
            return SegmentEvent.RESUMED
        else:
            self.silence_ms += FRAME_MS
            if not self.paused and self.silence_ms >= self.settings.pause_ms:
                self.paused = True
                return SegmentEvent.PAUSED
        if self.segment_ms >= self.settings.max_segment_s * 1000:
            return SegmentEvent.TOO_LONG
        return None

    def close(self) -> np.ndarray:
        """End the segment and return its voiced audio."""
        audio = self.voiced_audio()
        self._frames = []
        self.in_segment = False
        self.paused = False
        self.silence_ms = 0
        self._voiced_run = 0
        return audio
