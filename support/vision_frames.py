"""Pictures for the vision tests: signs rendered with real fonts, and a real photo of a face."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"  # Debian fonts-dejavu-core
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"  # Debian fonts-wqy-microhei


def sign(lines: list[str], *, size: tuple[int, int] = (640, 480), font: str = LATIN_FONT,
         font_px: int = 64, background: tuple[int, int, int] = (238, 236, 226)) -> np.ndarray:
    """A printed sign filling most of the frame, as held up to a camera (RGB)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, (70, 80, 90))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.rectangle((w // 12, h // 8, w - w // 12, h - h // 8), fill=background)
    face = ImageFont.truetype(font, font_px)
    total = len(lines) * int(font_px * 1.4)
    y = (h - total) // 2
    for line in lines:
        left, _, right, _ = draw.textbbox((0, 0), line, font=face)
        draw.text(((w - (right - left)) // 2, y), line, font=face, fill=(15, 15, 20))
        y += int(font_px * 1.4)
    return np.asarray(img)


def face_photo() -> np.ndarray:
    """A real photograph of a person facing the camera: scikit-image's bundled 'astronaut'
    (public domain, NASA), read without importing scikit-image."""
    import cv2

    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.submodule_search_locations, "pip install scikit-image"
    path = Path(spec.submodule_search_locations[0]) / "data" / "astronaut.png"
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])


def scenery(size: tuple[int, int] = (640, 480), seed: int = 1) -> np.ndarray:
    """Smooth coloured noise: a picture with content but no text and no face."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size[1] // 40, size[0] // 40, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, 40, axis=0), 40, axis=1))
