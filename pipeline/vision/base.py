"""The vision engine interface, the frames it reads, and its settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import SettingsError

VISION_ENGINES = ("offline", "openai", "none")


@dataclass(frozen=True)
class CameraFrame:
    """One decoded frame of the caller's video, as the call's media layer keeps it.

    `to_rgb(max_side)` converts (and downscales, keeping the aspect ratio, so that neither side
    exceeds `max_side`) to an HxWx3 uint8 RGB array. It is blocking: call it off the event loop.
    """

    width: int
    height: int
    age_s: float  # how long ago it arrived
    to_rgb: Callable[[int], np.ndarray]


# What the call gives the vision stage: its frames newest first (the latest, then a short
# history), or None when the caller sends no video at all.
FrameSource = Callable[[], "tuple[CameraFrame, ...] | None"]


@dataclass(frozen=True)
class SceneReading:
    """What an engine made of one frame."""

    note: str  # for the LLM's prompt: plain sentences, never more than the engine saw
    text: str = ""  # text read in the picture (OCR engines), "" if none
    faces: int | None = None  # people/faces in view, None when the engine does not count
    usable: bool = True  # False: nothing could be made of the picture at all


class VisionEngine(Protocol):
    """Reads one RGB frame off the event loop; one instance serves every call."""

    name: str
    max_side: int  # frames are downscaled to this before `describe` (pixels)

    @property
    def busy(self) -> bool: ...

    def warm_up(self) -> None:
        """Run once at start-up (blocking)."""
        ...

    def close(self) -> None: ...

    async def describe(self, image: np.ndarray, *, question: str,
                       language: str | None = None) -> SceneReading:
        """`image`: HxWx3 uint8 RGB, already downscaled to `max_side`. `question`: the
        caller's words, for engines that can answer them."""
        ...


@dataclass(frozen=True)
class VisionSettings:
    """The `[vision]` config section."""

    engine: str = "offline"  # "offline" (OCR + face detection), "openai", or "none"
    base_url: str = "http://127.0.0.1:8000/v1"  # OpenAI-compatible multimodal endpoint
    model: str = "default"
    api_key: str | None = None
    max_side: int = 960  # frames are downscaled to at most this many pixels a side
    threads: int = 2  # the offline engine's worker threads (onnxruntime)
    timeout_s: float = 8.0  # a slower vision step is skipped for that turn
    history_s: float = 6.0  # recent frames kept for "what did I just hold up?"
    stale_s: float = 2.0  # no new frame for this long: the camera is treated as stopped
    bot_video: bool = True  # send the bot's caption/state video to callers who send video
    bot_video_fps: float = 5.0  # at most this many new frames a second (captions change)

    def __post_init__(self) -> None:
        if self.engine not in VISION_ENGINES:
            raise SettingsError(f"engine: expected one of {', '.join(VISION_ENGINES)}")
        for name in ("max_side", "threads", "timeout_s", "history_s", "stale_s",
                     "bot_video_fps"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name}: must be greater than 0")
        if not 64 <= self.max_side <= 4096:
            raise SettingsError("max_side: expected 64..4096")
        if self.bot_video_fps > 30:
            raise SettingsError("bot_video_fps: expected at most 30")
