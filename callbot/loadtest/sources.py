"""Synthetic cameras for synthetic callers: moving colour bars, or a still image (a sign held
up to the camera), at 15 fps."""

from __future__ import annotations

import asyncio
import fractions
import time

import numpy as np
from aiortc import MediaStreamTrack
from av import VideoFrame

_FPS = 15
_TIME_BASE = fractions.Fraction(1, 90_000)


class ColorBarsTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        bars = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
                         [255, 0, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]], dtype=np.uint8)
        columns = np.repeat(bars, -(-width // len(bars)), axis=0)[:width]
        self._image = np.ascontiguousarray(np.broadcast_to(columns, (height, width, 3)))
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> VideoFrame:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._count / _FPS
        if due > now:
            await asyncio.sleep(due - now)
        frame = VideoFrame.from_ndarray(np.roll(self._image, self._count * 4, axis=1),
                                        format="rgb24")
        frame.pts = int(self._count * 90_000 / _FPS)
        frame.time_base = _TIME_BASE
        self._count += 1
        return frame


class ImageTrack(MediaStreamTrack):
    """A camera that shows one picture (HxWx3 uint8 RGB) until `show()` changes it."""

    kind = "video"

    def __init__(self, image: np.ndarray, fps: float = _FPS) -> None:
        super().__init__()
        self._fps = fps
        self._start: float | None = None
        self._count = 0
        self.show(image)

    def show(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        self._image = np.ascontiguousarray(image[: h // 2 * 2, : w // 2 * 2, :3])

    async def recv(self) -> VideoFrame:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._count / self._fps
        if due > now:
            await asyncio.sleep(due - now)
        frame = VideoFrame.from_ndarray(self._image, format="rgb24")
        frame.pts = int(self._count * 90_000 / self._fps)
        frame.time_base = _TIME_BASE
        self._count += 1
        return frame
