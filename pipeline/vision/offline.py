"""The embedded offline vision engine: it reads text (OCR) and counts faces, nothing more.

No vision-language weights exist in the registries this project installs from, so offline
the bot cannot describe a picture. It can read what is written in it (RapidOCR, PP-OCRv4
ONNX models, Chinese + English, from `rapidocr-onnxruntime`) and tell whether someone faces
the camera (OpenCV Haar cascades from Debian `opencv-data`). The scene note says exactly that
and no more.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from ..worker import ModelWorker
from .base import SceneReading
from .haar import HaarCascade

log = logging.getLogger(__name__)

CASCADE_DIRS = (
    "/usr/share/opencv4/haarcascades",  # Debian opencv-data
    "/usr/share/opencv/haarcascades",
)
MIN_TEXT_SCORE = 0.6  # OCR lines less certain than this are left out
MAX_TEXT_CHARS = 300
FACE_SIDE = 240  # faces are looked for in a copy this size (a caller's face is big)
NOT_MORE = "I can't describe images in more detail in offline mode."


def _cascade_path(name: str) -> str:
    for folder in CASCADE_DIRS:
        path = Path(folder) / name
        if path.exists():
            return str(path)
    raise EngineError(f"OpenCV cascade {name} not found (apt-get install opencv-data)")


class OfflineVision:
    """OCR + face detection on one worker thread shared by every call."""

    name = "offline-ocr"

    def __init__(self, *, threads: int = 2, max_side: int = 960) -> None:
        try:
            import cv2
            from rapidocr_onnxruntime import RapidOCR  # type: ignore[import-untyped]
        except ImportError as exc:
            raise EngineError(
                "offline vision needs rapidocr-onnxruntime (and opencv, which it installs)"
            ) from exc
        self.max_side = max_side
        cv2.setNumThreads(1)
        self._ocr: Any = RapidOCR(
            intra_op_num_threads=threads, inter_op_num_threads=1,
            det_limit_side_len=max_side, det_limit_type="max",
        )
        # OpenCV 5 has no CascadeClassifier: the cascade is evaluated by our own numpy code.
        self._faces = HaarCascade(_cascade_path("haarcascade_frontalface_default.xml"))
        self._worker = ModelWorker("vision")

    @property
    def busy(self) -> bool:
        return not self._worker.idle

    def warm_up(self) -> None:
        img = np.full((96, 320, 3), 255, np.uint8)
        img[40:56, 20:300] = 0
        self.read(img)

    def close(self) -> None:
        self._worker.close()

    async def describe(self, image: np.ndarray, *, question: str,
                       language: str | None = None) -> SceneReading:
        return await self._worker.submit(self.read, image)

    # ---- blocking, on the worker thread ------------------------------------------------------

    def read(self, image: np.ndarray) -> SceneReading:
        started = time.perf_counter()
        lines = self.read_text(image)
        faces = self.count_faces(image)
        log.debug("offline vision: %d lines, %d faces in %.0f ms", len(lines), faces,
                  (time.perf_counter() - started) * 1000)
        return scene_note(lines, faces)

    def read_text(self, image: np.ndarray) -> list[str]:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        result, _ = self._ocr(bgr)
        found: list[tuple[float, float, str]] = []
        for box, text, score in result or []:
            text = str(text).strip()
            if float(score) < MIN_TEXT_SCORE or not text:
                continue
            ys = [p[1] for p in box]
            xs = [p[0] for p in box]
            height = max(ys) - min(ys)
            found.append((min(ys) // max(height, 1.0), min(xs), text))  # row, then left
        return [text for _, _, text in sorted(found)]

    def count_faces(self, image: np.ndarray) -> int:
        import cv2

        h, w = image.shape[:2]
        scale = min(1.0, FACE_SIDE / max(h, w))
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (int(w * scale), int(h * scale)),
                              interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        side = max(24, min(grey.shape) // 5)
        return len(self._faces.detect(grey, scale_factor=1.2, min_size=side, min_neighbors=3))


def scene_note(lines: list[str], faces: int) -> SceneReading:
    """The honest sentence(s) for the prompt, from what was read and counted."""
    text = " / ".join(lines)
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS].rsplit(" ", 1)[0] + " …"
    people = {0: "", 1: "I can see one person."}.get(faces, f"I can see {faces} people.")
    if text:
        note = f'I can read: "{text}". {people}'.strip()
        note += f' {NOT_MORE}\nIf asked what it says, answer: It says "{text}".'
        return SceneReading(note=note, text=text, faces=faces)
    if faces:
        return SceneReading(note=f"{people} I can't read any text in the picture. {NOT_MORE}",
                            faces=faces)
    return SceneReading(
        note="Your camera shows nothing I can read, and I can't see a person. " + NOT_MORE,
        faces=0, usable=False)
