"""Build the configured vision engine (once per process)."""

from __future__ import annotations

import logging

from .base import VisionEngine, VisionSettings

log = logging.getLogger(__name__)


def load_vision(settings: VisionSettings) -> VisionEngine | None:
    """Blocking (the offline engine loads ONNX models, ~1-3 s): call it from a thread."""
    if settings.engine == "none":
        return None
    engine: VisionEngine
    if settings.engine == "openai":
        from .openai_vision import OpenAIVision

        engine = OpenAIVision(settings.base_url, settings.model, api_key=settings.api_key,
                              max_side=settings.max_side, timeout_s=settings.timeout_s)
    else:
        from .offline import OfflineVision

        engine = OfflineVision(threads=settings.threads, max_side=settings.max_side)
    engine.warm_up()
    log.info("vision engine loaded: %s", engine.name)
    return engine
