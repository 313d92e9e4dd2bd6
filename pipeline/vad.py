"""Voice activity detection and speech segmentation.

`VoiceActivityDetector` is the engine interface (one 20 ms frame -> speech or not);
`SpeechSegmenter` turns its per-frame decisions into speech start / pause / resume events
with pre-roll, so the pipeline can act on a pause before the turn is confirmed over.
"""

from __future__ import annotations

import collections
import enum
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import webrtcvad

from .audio import FRAME_MS, FRAME_SAMPLES, PIPELINE_RATE

TRAILING_KEEP_MS = 100  # silence kept after the last voiced frame: Whisper needs the word's tail
# Inside a segment a frame this far below the segment's loudest voiced frame, or below the
# floor, is silence whatever webrtcvad says: its 80-140 ms hangover after the last word would
# otherwise delay every pause (and so every reply). Noise 10-20 dB under the speech stays above
# the gate, so in noise the VAD alone decides, as before.
QUIET_BELOW_PEAK_DB = 35.0
QUIET_FLOOR_DBFS = -60.0
# A voice onset must also be louder than this (a caller's speech is -35..-15 dBFS).
ONSET_FLOOR_DBFS = -50.0
BACKGROUND_FRAMES = 50  # the last second before an onset: its median level is the background


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


class SileroVad:
    """Silero VAD v6 (the ONNX file faster-whisper ships; no download), one call's state.

    webrtcvad calls steady noise speech (mains hum, a fan, pink noise 10-20 dB under the
    voice): turns in such noise never ended. Silero tells them apart; it decides every 32 ms
    (512 samples), so each 20 ms frame gets the newest decision, with hysteresis (speech from
    p >= 0.5 until p < 0.35). ~0.13 ms per decision on one thread.
    """

    CHUNK = 512
    CONTEXT = 64

    def __init__(self, threshold: float = 0.5, release: float = 0.35) -> None:
        self._session = _silero_session()
        self.threshold = threshold
        self.release = release
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.speaking = False
        self.probability = 0.0

    def is_speech(self, frame: np.ndarray) -> bool:
        self._pending = np.concatenate([self._pending, frame.astype(np.float32) / 32768.0])
        while len(self._pending) >= self.CHUNK:
            chunk, self._pending = self._pending[: self.CHUNK], self._pending[self.CHUNK:]
            inputs = {"input": np.concatenate([self._context, chunk])[None],
                      "h": self._h, "c": self._c}
            out, self._h, self._c = self._session.run(None, inputs)
            self._context = chunk[-self.CONTEXT:]
            self.probability = float(np.asarray(out).reshape(-1)[0])
            if self.probability >= self.threshold:
                self.speaking = True
            elif self.probability < self.release:
                self.speaking = False
        return self.speaking


def load_silero() -> None:
    """Load Silero's model now (blocking: at start-up, so no call's first frame waits)."""
    _silero_session()


@functools.lru_cache(maxsize=1)
def _silero_session() -> Any:
    """One ONNX session for every call (run() is thread-safe; the state is per call)."""
    import onnxruntime
    from faster_whisper.utils import get_assets_path

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = Path(get_assets_path()) / "silero_vad_v6.onnx"
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                        sess_options=options)


def speech_segmenter(vad: VoiceActivityDetector | None, aggressiveness: int, neural: bool,
                     settings: SegmenterSettings) -> SpeechSegmenter:
    """The segmenter a call uses: `vad` if the app gave one, else webrtcvad (fast, but steady
    noise is speech to it) confirmed by Silero when `neural`."""
    if vad is not None:
        return SpeechSegmenter(vad, settings)
    return SpeechSegmenter(WebRtcVad(aggressiveness), settings,
                           confirm=SileroVad() if neural else None)


@dataclass(frozen=True)
class SegmenterSettings:
    # Voiced audio within the start window that opens a segment. webrtcvad marks 80-100 ms
    # voiced after any transient (a click, noise onset: its hangover), so ask for more.
    start_ms: int = 120
    start_window_ms: int = 160
    # Silence after speech that counts as a pause (speculation starts), counted from where the
    # voice's energy ends (energy_gate). 120 ms was tried: a Piper "What is the capital of ...
    # France?" then paused before "France", and the wasted transcription delayed the real one.
    pause_ms: int = 160
    resume_ms: int = 100  # voiced audio after a pause that resumes the segment (webrtcvad
    # calls ~80 ms voiced after a lone click, so less would drop speculation on clicks)
    preroll_ms: int = 240  # audio kept from before the detected start
    energy_gate: bool = True  # end speech where its energy ends, not with webrtcvad's hangover
    max_segment_s: float = 25.0  # Whisper sees at most 30 s; force a turn end before that
    # A voice onset is reported as soon as webrtcvad has heard onset_ms of voice, each frame
    # onset_rise_db above the median level of the second before (steady hum or a fan never
    # rises, so it never makes one): long before the segment opens, so a talking bot can
    # pause at once (InterruptionSettings.pause_on_onset). 0 = no onsets.
    onset_ms: int = 40
    onset_rise_db: float = 9.0


class SegmentEvent(enum.Enum):
    STARTED = "started"  # speech began (segment opened)
    ONSET = "onset"  # voice may be starting (before STARTED; may come to nothing)
    PAUSED = "paused"  # silence for pause_ms after speech
    RESUMED = "resumed"  # speech came back after a pause, same segment
    TOO_LONG = "too_long"  # segment hit max_segment_s


class SpeechSegmenter:
    """Feeds 20 ms frames; keeps the current segment's audio; reports edges.

    The segment stays open through pauses: the caller decides when a turn has ended (it may
    wait longer after an incomplete-sounding sentence) and then calls `close()`.

    `confirm` (e.g. Silero) must agree that there is speech: a segment opens once `vad` has
    heard `start_ms` of voice in the window *and* `confirm` hears speech now (so its slower
    onset costs no time: `vad`'s frames before it still count), and inside a segment a frame
    is voiced only if both say so.
    """

    def __init__(self, vad: VoiceActivityDetector, settings: SegmenterSettings,
                 confirm: VoiceActivityDetector | None = None) -> None:
        self._vad = vad
        self._confirm = confirm
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
        self._peak_dbfs = QUIET_FLOOR_DBFS  # loudest voiced frame of the segment
        self._levels: collections.deque[float] = collections.deque(maxlen=BACKGROUND_FRAMES)
        self._onset_run = 0  # frames in a row that sound like a voice starting

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
        # The confirming detector sees every frame (it keeps state across them).
        confirmed = self._confirm.is_speech(frame) if self._confirm is not None else True
        if not self.in_segment:
            self._preroll.append(frame)
            self._window.append(voiced)
            onset = self._onset(frame, voiced)
            if sum(self._window) * FRAME_MS >= self.settings.start_ms and confirmed:
                self._onset_run = 0  # the background level stays: it is the line's
                self.in_segment = True
                self.paused = False
                self.silence_ms = 0
                self.last_voiced_frame = self.frames_seen
                self._frames = list(self._preroll)
                self._peak_dbfs = max(frame_dbfs(f) for f in self._frames)
                self._preroll.clear()
                self._window.clear()
                return SegmentEvent.STARTED
            return SegmentEvent.ONSET if onset else None

        self._frames.append(frame)
        voiced = voiced and confirmed
        if voiced and self.settings.energy_gate:
            level = frame_dbfs(frame)
            if level < max(QUIET_FLOOR_DBFS, self._peak_dbfs - QUIET_BELOW_PEAK_DB):
                voiced = False  # the VAD's hangover, or a breath far under the speech
            else:
                self._peak_dbfs = max(self._peak_dbfs, level)
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

    def _onset(self, frame: np.ndarray, voiced: bool) -> bool:
        """Whether this frame completes a voice onset (reported once per onset)."""
        level = frame_dbfs(frame)
        need = self.settings.onset_ms // FRAME_MS
        rising = False
        if voiced and need:
            background = float(np.median(self._levels)) if self._levels else QUIET_FLOOR_DBFS
            rising = level >= max(ONSET_FLOOR_DBFS, background + self.settings.onset_rise_db)
        self._onset_run = self._onset_run + 1 if rising else 0
        # The background is what came before an onset, not the onset itself; but a "voice"
        # that stays for half a second (noise switched on) becomes the background.
        if not rising or self._onset_run > BACKGROUND_FRAMES // 2:
            self._levels.append(level)
        return bool(need) and self._onset_run == need

    def close(self) -> np.ndarray:
        """End the segment and return its voiced audio."""
        audio = self.voiced_audio()
        self._frames = []
        self.in_segment = False
        self.paused = False
        self.silence_ms = 0
        self._voiced_run = 0
        self._peak_dbfs = QUIET_FLOOR_DBFS
        return audio


def frame_dbfs(frame: np.ndarray) -> float:
    """Loudness of one frame of int16 audio, dB relative to full scale."""
    rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
    return 20.0 * float(np.log10(max(rms, 1e-3) / 32768.0))
