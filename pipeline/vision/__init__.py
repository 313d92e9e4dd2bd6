"""Vision: what the caller's camera (or shared screen) shows, read only when a turn asks.

`VisionSource` is a context source (`pipeline/augment.py`): for a turn whose words are about
the picture ("what does this say?", "can you see me?") or a typed turn sent with
`"look": true`, it takes the call's latest frame, lets a `VisionEngine` read it on a worker
thread and puts an honest scene note into the prompt. Other turns pay nothing.
"""

from .base import CameraFrame, FrameSource, SceneReading, VisionEngine, VisionSettings
from .engines import load_vision
from .source import VisionSource
from .trigger import needs_picture

__all__ = [
    "CameraFrame", "FrameSource", "SceneReading", "VisionEngine", "VisionSettings",
    "VisionSource", "load_vision", "needs_picture",
]
