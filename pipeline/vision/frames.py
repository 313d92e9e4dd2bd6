"""Frame helpers shared by the engines: downscaling, blank-picture check, JPEG encoding.
All blocking (numpy/Pillow work): run them off the event loop."""

from __future__ import annotations

import io

import numpy as np

BLANK_STD = 6.0  # grey-level spread below this: a black, covered or uniform picture


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size that keeps the aspect ratio with neither side above `max_side` (even sizes,
    never upscaled, at least 2x2)."""
    scale = min(1.0, max_side / max(width, height, 1))
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Area-averaging downscale of an HxWx3 uint8 image (numpy only; the rtc layer already
    scales with libswscale, this is for images that come from elsewhere)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    step = -(-max(h, w) // max_side)  # integer block size: cheap and alias-free
    hh, ww = h // step * step, w // step * step
    blocks = image[:hh, :ww].reshape(hh // step, step, ww // step, step, -1)
    out: np.ndarray = blocks.mean(axis=(1, 3)).astype(np.uint8)
    return out


def is_blank(image: np.ndarray) -> bool:
    """A picture with (almost) nothing in it: black, covered lens, one flat colour."""
    small = image[:: max(1, image.shape[0] // 120), :: max(1, image.shape[1] // 160)]
    grey = small.astype(np.float32).mean(axis=2) if small.ndim == 3 else small
    return float(grey.std()) < BLANK_STD


def to_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[:, :, :3]), "RGB").save(
        buf, "JPEG", quality=quality)
    return buf.getvalue()
