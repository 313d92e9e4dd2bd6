"""`VisionSource`: the context source that looks at the caller's camera when a turn asks."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from ..augment import TurnContext, TurnRequest
from ..events import VisionUsed
from .base import CameraFrame, FrameSource, VisionEngine
from .frames import is_blank
from .trigger import needs_picture

NO_VIDEO = ("The caller sends no video in this call, so you cannot see anything. "
            "Tell them to turn on their camera or share their screen.")
NOTHING_USABLE = ("The caller's camera shows nothing usable (a black, covered or blank "
                  "picture). Tell them plainly: your camera shows nothing I can read.")


class VisionSource:
    """A `ContextSource` (pipeline/augment.py) for one call's video."""

    name = "vision"
    label = "What the caller's camera shows"

    def __init__(self, engine: VisionEngine, frames: FrameSource, *, timeout_s: float = 8.0,
                 stale_s: float = 2.0) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self._frames = frames
        self._stale_s = stale_s
        self.looks = 0  # turns that used the picture (for tests and metrics)
        self.last_note: str | None = None  # what the latest such turn put into the prompt

    async def context_for(self, request: TurnRequest) -> TurnContext | None:
        if not (request.look or needs_picture(request.text, request.language)):
            return None  # not about the picture: costs nothing
        started = time.perf_counter()
        self.looks += 1
        frames = self._frames()
        if frames is None:
            return self._result(NO_VIDEO, started)
        if not frames:
            return self._result("The caller's video has not sent a picture yet. Say you "
                                "cannot see anything yet.", started)
        chosen = await asyncio.to_thread(_first_usable, frames, self.engine.max_side)
        if chosen is None:
            return self._result(NOTHING_USABLE, started)
        frame, image = chosen
        reading = await self.engine.describe(image, question=request.text,
                                             language=request.language)
        note = reading.note
        newest = frames[0]
        if newest.age_s > self._stale_s:
            note = (f"The camera stopped sending pictures {newest.age_s:.0f} seconds ago; "
                    f"this is its last picture. {note}")
        elif frame is not newest:
            note = (f"The camera shows nothing now; {frame.age_s:.0f} seconds ago it showed "
                    f"this. {note}")
        return self._result(note, started)

    def _result(self, note: str, started: float) -> TurnContext:
        self.last_note = note
        ms = round((time.perf_counter() - started) * 1000, 1)
        return TurnContext(notes=note, timings={"vision_ms": ms},
                           events=[VisionUsed(engine=self.engine.name, ms=ms)])


def _first_usable(frames: tuple[CameraFrame, ...], max_side: int
                  ) -> tuple[CameraFrame, np.ndarray] | None:
    """The newest frame that is not blank, converted and downscaled (blocking)."""
    for frame in frames:
        image = frame.to_rgb(max_side)
        if image.size and not is_blank(image):
            return frame, image
    return None
