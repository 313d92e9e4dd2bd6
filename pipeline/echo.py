"""Server-side echo cancellation: the bot's own voice, coming back through a caller's
speakerphone, taken out of the caller's audio before VAD and ASR.

callbot holds both signals: what it sent (the far end: `far()`, called with every frame the
paced output track sent, silence included, so the two streams keep step) and what it hears
(`near()`, each 20 ms frame of the caller's audio). WebRTC's AEC3 (`pywebrtc-audio`) finds the
delay between them itself (the line's round trip plus the caller's loudspeaker) and subtracts
the echo; a caller talking over the bot passes through.

Adaptive (the default): AEC3 runs on every frame, but its output is used only where an echo is
to be expected. Its residual suppressor holds back the start of a caller's speech while the bot
talks even when there is no echo at all (a clean caller's barge-in went from ~180 ms to ~1 s),
so `EchoPath` watches the call: the far end cross-correlated with the microphone (0-700 ms
lags) says whether the bot's voice comes back, how late and how loud (the echo return loss).
- No echo (a headset, a phone's own canceller): the caller's audio passes untouched.
- An echo: each frame is compared with the echo predicted from what was sent then. A frame
  clearly louder than that (the caller talking over the bot) passes raw, so a barge-in is heard
  at once; the others are AEC3's output. Either way a frame keeps no more energy than the echo
  cannot explain, which also covers AEC3 before it has converged (a weak echo early in a call).
- Not known yet (the bot's first words): the echo is assumed as loud as what was sent.
"""

from __future__ import annotations

import collections
import time

import numpy as np

from .audio import FRAME_SAMPLES, PIPELINE_RATE, take_samples

AEC_CHUNK = PIPELINE_RATE // 100  # AEC3 works on 10 ms blocks
# Far-end audio kept waiting for its near-end partner: more than this and the oldest goes
# (the caller's audio stalled); AEC3 estimates delays well within it.
MAX_FAR_BACKLOG = PIPELINE_RATE // 2

# EchoPath: correlation on 8 kHz copies of the last WINDOW of microphone against what was sent
# up to MAX_LAG before (network both ways, jitter buffers, the caller's loudspeaker delay:
# ~150-400 ms on the loopback bench with 50-250 ms of echo delay).
DECIMATE = 2
WINDOW_FRAMES = 25  # 0.5 s
MAX_LAG_FRAMES = 30  # 0.6 s
EVERY_FRAMES = 10  # a look every 200 ms
ECHO_NCC = 0.4  # normalised correlation this high, ECHO_LOOKS looks in a row at the same lag
ECHO_LOOKS = 2  # (within LAG_TOLERANCE): the bot's voice is coming back
LAG_TOLERANCE_FRAMES = 2
NO_ECHO_NCC = 0.2  # ... this low while the bot talks (or a silent microphone): no echo
NO_ECHO_LOOKS = 2  # consecutive looks before "no echo" is believed
MARGIN_DB = 6.0  # a frame this much over the predicted echo is the caller talking
SPREAD_FRAMES = 3  # the predicted echo: the loudest far frame within +-60 ms of the lag
FAR_FLOOR = 1e4  # mean square (int16) under which the bot counts as silent (-50 dBFS)
NEAR_FLOOR = 1e2  # ... and the microphone (-70 dBFS)


class EchoPath:
    """Is the bot's voice coming back into this caller's microphone: how late, how loud."""

    def __init__(self) -> None:
        self.state = "unknown"  # unknown | echo | none
        self.lag_frames = 0
        self.erl_db = 0.0  # echo level relative to what was sent (0: as loud, the worst case)
        self.last_ncc = 0.0
        self._quiet_looks = 0
        self._candidate_lag = -100
        self._candidate_looks = 0
        keep = WINDOW_FRAMES + MAX_LAG_FRAMES + SPREAD_FRAMES
        self._far: collections.deque[np.ndarray] = collections.deque(maxlen=keep)
        self._near: collections.deque[np.ndarray] = collections.deque(maxlen=WINDOW_FRAMES)
        self._far_energy: collections.deque[float] = collections.deque(maxlen=keep)
        self._frames = 0

    def push(self, far: np.ndarray, near: np.ndarray) -> None:
        """One 20 ms frame pair, aligned as AEC3 gets them."""
        far_f = far.astype(np.float32)
        self._far.append(far_f.reshape(-1, DECIMATE).mean(axis=1))
        self._near.append(near.astype(np.float32).reshape(-1, DECIMATE).mean(axis=1))
        self._far_energy.append(float(np.mean(far_f * far_f)))
        self._frames += 1
        if self._frames % EVERY_FRAMES == 0 and len(self._near) == WINDOW_FRAMES:
            self._look()

    def predicted_echo(self) -> float:
        """Mean square the echo in the newest frame may have (0 when nothing comes back)."""
        if self.state == "none" or not self._far_energy:
            return 0.0
        energies = list(self._far_energy)
        newest = len(energies) - 1
        lag = self.lag_frames if self.state == "echo" else None
        if lag is None:  # unknown delay: the loudest of everything that may be coming back now
            span = energies[max(0, newest - MAX_LAG_FRAMES):]
        else:
            span = energies[max(0, newest - lag - SPREAD_FRAMES):
                            max(0, newest - lag + SPREAD_FRAMES + 1)]
        loudest = max(span, default=0.0)
        if loudest < FAR_FLOOR:
            return 0.0
        return loudest * 10 ** (self.erl_db / 10)

    def _look(self) -> None:
        near = np.concatenate(self._near)
        far = np.concatenate(self._far)
        near_e = float(np.dot(near, near))
        far_recent = list(self._far_energy)[-(WINDOW_FRAMES + MAX_LAG_FRAMES):]
        if max(far_recent, default=0.0) < FAR_FLOOR:
            return  # the bot was silent: nothing to learn
        if near_e < NEAR_FLOOR * near.size:
            self.last_ncc = 0.0
            if _covered(far, near.size):
                self._nothing_back()  # the bot talked long enough, the microphone stayed silent
            return
        ncc, lag, covered = _best_lag(near, far)
        self.last_ncc = ncc
        if ncc >= ECHO_NCC:
            self._quiet_looks = 0
            lag_frames = round(lag * DECIMATE / FRAME_SAMPLES)
            # An echo comes back at the same delay look after look; two voices that happen
            # to correlate (a caller's speech with the bot's) do not.
            if abs(lag_frames - self._candidate_lag) <= LAG_TOLERANCE_FRAMES:
                self._candidate_looks += 1
            else:
                self._candidate_lag, self._candidate_looks = lag_frames, 1
            if self._candidate_looks < ECHO_LOOKS:
                return
            seg = far[far.size - near.size - lag:far.size - lag]
            ratio = near_e / max(float(np.dot(seg, seg)), 1.0)
            # With the caller talking too, only the correlated part is echo.
            erl = 10 * np.log10(ratio * (1.0 if ncc >= 0.6 else ncc * ncc) + 1e-12)
            self.erl_db = erl if self.state != "echo" else 0.7 * self.erl_db + 0.3 * erl
            self.lag_frames = lag_frames
            self.state = "echo"
        else:
            self._candidate_looks = 0
            if ncc < NO_ECHO_NCC and covered:
                self._nothing_back()
            else:
                self._quiet_looks = 0

    def _nothing_back(self) -> None:
        if self.state != "unknown":
            return  # an echo once found stays: a call's speakerphone rarely goes away
        self._quiet_looks += 1
        if self._quiet_looks >= NO_ECHO_LOOKS:
            self.state = "none"


def _best_lag(near: np.ndarray, far: np.ndarray) -> tuple[float, int, bool]:
    """Highest normalised correlation of `near` with `far` ending 0..len(far)-len(near)
    samples before it, that lag, and whether the bot talked in the stretch of `far` behind
    every lag (else an echo may still be on its way: no verdict of "none")."""
    n = near.size
    lags = far.size - n
    size = 1 << int(np.ceil(np.log2(far.size + n)))
    spec = np.fft.rfft(far, size) * np.conj(np.fft.rfft(near, size))
    xcorr = np.fft.irfft(spec, size)[:lags + 1]  # xcorr[k] = sum near[i] * far[k + i]
    csum = np.concatenate(([0.0], np.cumsum(far.astype(np.float64) ** 2)))
    far_e = csum[n:n + lags + 1] - csum[:lags + 1]
    near_e = float(np.dot(near, near))
    ncc = xcorr / np.sqrt(np.maximum(far_e, 1.0) * near_e)
    k = int(np.argmax(ncc))
    return float(ncc[k]), lags - k, _covered(far, n)  # k = lags: no delay


def _covered(far: np.ndarray, n: int) -> bool:
    """The bot talked in every `n`-long stretch of `far` an echo in the window may come from."""
    csum = np.concatenate(([0.0], np.cumsum(far.astype(np.float64) ** 2)))
    energies = csum[n:] - csum[:-n]
    return bool(energies.min() >= FAR_FLOOR / 10 * n)


class EchoCanceller:
    """One call's AEC3. Not thread-safe: `far` and `near` run on the call's event loop.
    `adaptive`: AEC3's output only where an echo is expected (see the module's doc)."""

    def __init__(self, *, stream_delay_ms: int = 0, adaptive: bool = True) -> None:
        from pywebrtc_audio import EchoCanceller as Aec3  # optional dependency, loaded per call

        self._aec = Aec3(sample_rate=PIPELINE_RATE, num_channels=1,
                         stream_delay_ms=stream_delay_ms)
        self._far: collections.deque[np.ndarray] = collections.deque()
        self._far_queued = 0
        self.adaptive = adaptive
        self.path = EchoPath()
        self.cpu_s = 0.0  # time spent in AEC3 (reported by bench.echo)
        self.frames = 0
        self.raw_frames = 0  # frames passed as heard (adaptive)

    def hears_echo(self) -> bool:
        """The caller's microphone is known to hear the bot (adaptive only)."""
        return self.path.state == "echo"

    def far(self, pcm: np.ndarray, rate: int = PIPELINE_RATE) -> None:
        """What the bot sent just now, mono int16 at `rate` (silence included)."""
        if rate != PIPELINE_RATE and pcm.size:
            pcm = _to_pipeline_rate(pcm, rate)
        if pcm.size:
            self._far.append(pcm.astype(np.int16, copy=False))
            self._far_queued += pcm.size
        while self._far_queued > MAX_FAR_BACKLOG and self._far:
            self._far_queued -= self._far.popleft().size

    def _take_far(self, n: int) -> np.ndarray:
        out, filled = take_samples(self._far, n)
        self._far_queued -= filled
        return out

    def near(self, frame: np.ndarray) -> np.ndarray:
        """One frame of the caller's audio (16 kHz mono int16), the bot's echo taken out."""
        started = time.perf_counter()
        far = self._take_far(frame.size)
        out = np.empty_like(frame)
        for i in range(0, frame.size - AEC_CHUNK + 1, AEC_CHUNK):
            out[i:i + AEC_CHUNK] = self._aec.process(
                np.ascontiguousarray(frame[i:i + AEC_CHUNK]),
                np.ascontiguousarray(far[i:i + AEC_CHUNK]))
        if self.adaptive and frame.size == FRAME_SAMPLES:
            out = self._choose(frame, far, out)
        self.cpu_s += time.perf_counter() - started
        self.frames += 1
        return out

    def _choose(self, frame: np.ndarray, far: np.ndarray, cancelled: np.ndarray) -> np.ndarray:
        self.path.push(far, frame)
        echo = self.path.predicted_echo()
        if echo <= 0.0:
            self.raw_frames += 1
            return frame  # nothing of the bot's voice can be in this frame
        heard = _energy(frame)
        if heard > echo * 10 ** (MARGIN_DB / 10):
            self.raw_frames += 1
            source = frame  # the caller talks over the bot: heard at once, not held back
        else:
            source = cancelled
        # No more energy than the echo cannot explain.
        room = max(0.0, heard - echo)
        have = _energy(source)
        if have <= room:
            return source
        scaled: np.ndarray = (source.astype(np.float32) * np.sqrt(room / have)).astype(np.int16)
        return scaled


def _energy(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float32)
    return float(np.mean(x * x))


def _to_pipeline_rate(pcm: np.ndarray, rate: int) -> np.ndarray:
    """48 kHz -> 16 kHz by averaging threes (a crude low-pass is enough for a reference the
    adaptive filter matches anyway); other rates by linear interpolation."""
    if rate % PIPELINE_RATE == 0:
        step = rate // PIPELINE_RATE
        usable = pcm.size - pcm.size % step
        out: np.ndarray = pcm[:usable].reshape(-1, step).mean(axis=1).astype(np.int16)
        return out
    n = round(pcm.size * PIPELINE_RATE / rate)
    x = np.linspace(0, pcm.size - 1, n)
    resampled: np.ndarray = np.interp(x, np.arange(pcm.size), pcm).astype(np.int16)
    return resampled


def available() -> bool:
    """pywebrtc-audio is installed."""
    try:
        import pywebrtc_audio  # noqa: F401
    except ImportError:
        return False
    return True
