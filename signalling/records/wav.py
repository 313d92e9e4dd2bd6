"""A call's stereo recording: caller left, bot right, 16 kHz, on the call's clock.

The caller's frames are placed one after another from the first one's arrival; the bot's audio
at the time it was played to the caller (a WebRTC track hands frames out in real time; a
WebSocket client's playout clock says when it will play what it was sent, and a barge-in cuts
what it had not played yet). A few seconds of both are mixed in memory, then handed to a writer
thread in blocks: memory is bounded, and a slow or full disk drops audio (counted), it never
holds up the call.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import wave
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RATE = 16_000
WINDOW_S = 4.0  # mixed in memory before it goes to disk
RESYNC_S = 0.3  # the caller's frames drifted this far from their arrival time: re-place them


def to_rate(pcm: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
    """Cheap enough for 50 frames a second on the event loop (a real resampler costs ~1.4 ms
    a frame): an integer ratio averages each group (a box low-pass), others interpolate.
    Good enough to listen to; the pipeline's audio is not touched."""
    if rate == out_rate or not pcm.size:
        return pcm.astype(np.int16, copy=False)
    if rate % out_rate == 0:
        step = rate // out_rate
        usable = pcm.size - pcm.size % step
        grouped: np.ndarray = pcm[:usable].reshape(-1, step).mean(axis=1)
        return grouped.astype(np.int16)
    n = int(round(pcm.size * out_rate / rate))
    positions = np.arange(n) * (rate / out_rate)
    stretched: np.ndarray = np.interp(positions, np.arange(pcm.size), pcm)
    return stretched.astype(np.int16)


class StereoRecording:
    def __init__(self, path: Path, *, max_backlog_s: float = 30.0, rate: int = RATE) -> None:
        self.path = path
        self.rate = rate
        self._window = int(WINDOW_S * rate)
        self._buf = np.zeros((self._window, 2), dtype=np.int16)
        self._base = 0  # sample index of _buf[0]
        self._end = 0  # one past the last sample placed
        self._caller_at: int | None = None  # where the next caller frame goes
        self._future: list[tuple[int, np.ndarray]] = []  # bot audio not yet played
        self.dropped_s = 0.0  # lost to a slow or failed disk, or placed too late
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(
            maxsize=max(2, int(max_backlog_s / (WINDOW_S / 2))))
        self.failed: str | None = None
        self.closed = False
        self._thread = threading.Thread(target=self._write, name="call-recording", daemon=True)
        self._thread.start()

    # ---- the call's side (event loop) ------------------------------------------------------

    def caller(self, frame: np.ndarray, at_s: float) -> None:
        """One caller frame (16 kHz mono int16) that arrived `at_s` into the call."""
        arrived = int(at_s * self.rate)
        if self._caller_at is None or abs(arrived - self._caller_at) > RESYNC_S * self.rate:
            self._caller_at = arrived
        self._place(0, self._caller_at, frame)
        self._caller_at += frame.size
        self._play_due(arrived)

    def bot(self, pcm: np.ndarray, rate: int, at_s: float) -> None:
        """Bot audio the caller hears from `at_s` into the call (maybe in the future)."""
        audio = to_rate(pcm, rate, self.rate)
        if audio.size:
            self._future.append((int(at_s * self.rate), audio))
            self._play_due(int(at_s * self.rate))

    def bot_cut(self, at_s: float) -> None:
        """The caller heard no more of what was sent from `at_s` on (barge-in)."""
        cut = int(at_s * self.rate)
        kept: list[tuple[int, np.ndarray]] = []
        for start, audio in self._future:
            if start < cut:
                kept.append((start, audio[: cut - start]))
        self._future = kept
        if cut < self._base + self._window:  # placed already (up to a window ahead): unplay it
            self._buf[max(0, cut - self._base) :, 1] = 0

    def close(self, at_s: float) -> None:
        """The call ended `at_s` in: what was played is written, the file is finished."""
        if self.closed:
            return
        self._play_due(int(at_s * self.rate), final=True)
        n = max(0, self._end - self._base)
        if n:
            self._emit(self._buf[:n].copy())
        self.closed = True  # the writer finishes the file once the queue is empty
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wakes it now; never waits for the disk

    def wait_written(self, timeout: float = 10.0) -> None:
        """(A thread) until the file is complete."""
        self._thread.join(timeout)

    @property
    def duration_s(self) -> float:
        return self._end / self.rate

    def _play_due(self, now: int, final: bool = False) -> None:
        """Place the bot audio whose time has come (all of it up to `now` when `final`)."""
        if not self._future:
            return
        due = [(s, a) for s, a in self._future if s <= now]
        self._future = [(s, a) for s, a in self._future if s > now]
        for start, audio in due:
            if not final and start + audio.size > now + self._window // 2:
                head = now + self._window // 2 - start  # the rest when its time comes
                self._future.append((start + head, audio[head:]))
                audio = audio[:head]
            elif final:
                audio = audio[: max(0, now - start)]
            self._place(1, start, audio)

    def _place(self, channel: int, start: int, audio: np.ndarray) -> None:
        if start < self._base:  # too late for what was written already
            skip = self._base - start
            self.dropped_s += min(skip, audio.size) / self.rate
            audio, start = audio[skip:], self._base
        if not audio.size:
            return
        end = start + audio.size
        while end > self._base + self._window:
            self._flush(end - (self._base + self._window))
        offset = start - self._base
        self._buf[offset : offset + audio.size, channel] = audio
        self._end = max(self._end, end)

    def _flush(self, need: int) -> None:
        """Hand the oldest part of the window to the writer (at least half of it)."""
        n = min(self._window, max(need, self._window // 2))
        self._emit(self._buf[:n].copy())
        self._buf[: self._window - n] = self._buf[n:]
        self._buf[self._window - n :] = 0
        self._base += n

    def _emit(self, block: np.ndarray) -> None:
        if self.failed is not None:
            self.dropped_s += len(block) / self.rate
            return
        try:
            self._queue.put_nowait(block)
        except queue.Full:  # the disk cannot keep up: lose audio, never stall the call
            self.dropped_s += len(block) / self.rate

    # ---- the writer thread -------------------------------------------------------------------

    def _next(self) -> np.ndarray | None:
        """The next block to write; None when the recording is closed and all is written."""
        while True:
            try:
                return self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.closed:
                    return None

    def _write(self) -> None:
        out: wave.Wave_write | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            out = wave.open(str(self.path), "wb")
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(self.rate)
            while (block := self._next()) is not None:
                out.writeframes(block.astype("<i2", copy=False).tobytes())
        except OSError as exc:
            self.failed = str(exc)
            log.warning("recording %s failed: %s", self.path.name, exc)
            while self._next() is not None:  # keep the call's side from filling it
                pass
        finally:
            if out is not None:
                try:
                    out.close()
                except OSError as exc:
                    self.failed = self.failed or str(exc)
