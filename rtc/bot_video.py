"""The bot's own video: its state and live captions (what it says, what it heard), drawn on
the server with Pillow, no model.

Sent only to callers who send video. Frames are drawn only when something changed, at most
`fps` a second; while nothing changes, the same encoded picture is re-sent at a keep-alive
rate (one a second) so the caller's decoder and stats stay alive but nothing new is encoded
at the full rate.
"""

from __future__ import annotations

import asyncio
import fractions
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

VIDEO_CLOCK = 90_000
_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
KEEPALIVE_S = 1.0
FONT_FILES = (  # CJK-capable first (captions may be Chinese), then Latin-only
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)
STATE_COLOURS = {  # background, accent
    "idle": ((24, 26, 32), (140, 140, 150)),
    "listening": ((18, 32, 52), (90, 170, 255)),
    "thinking": ((48, 38, 14), (250, 190, 60)),
    "speaking": ((14, 44, 30), (80, 220, 140)),
}
STATE_LABELS = {"idle": "Idle", "listening": "Listening", "thinking": "Thinking…",
                "speaking": "Speaking"}
MAX_CAPTION_CHARS = 400


def _font(size: int) -> Any:
    from PIL import ImageFont

    for path in FONT_FILES:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


class CaptionBoard:
    """What the bot's video shows; `version` changes whenever the picture would."""

    def __init__(self, width: int = 512, height: int = 288) -> None:
        self.width = width
        self.height = height
        self.state = "idle"
        self.heard = ""  # the caller's words (partial, then final)
        self.said = ""  # the bot's current reply
        self.version = 0
        self.changed = asyncio.Event()
        self._said_turn: int | None = None
        self._fonts: tuple[Any, Any] | None = None
        self._masks: dict[tuple[int, str], np.ndarray] = {}  # rasterised text lines

    def _touch(self) -> None:
        self.version += 1
        self.changed.set()

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._touch()

    def set_heard(self, text: str) -> None:
        """The caller's words so far (a partial, then the final transcript)."""
        if text != self.heard:
            self.heard = text[-MAX_CAPTION_CHARS:]
            self._touch()

    def add_said(self, turn_id: int, delta: str) -> None:
        """A piece of the bot's reply; a new turn starts a new caption."""
        if turn_id != self._said_turn:
            self._said_turn, self.said = turn_id, ""
        self.said = (self.said + delta)[-MAX_CAPTION_CHARS:]
        self._touch()

    def set_said(self, text: str) -> None:
        if text != self.said:
            self.said = text[-MAX_CAPTION_CHARS:]
            self._touch()

    def render(self) -> np.ndarray:
        """The picture now, HxWx3 uint8 RGB. Each text line is rasterised once (Pillow) and
        cached; a new frame is a flat fill plus a few alpha blends (~0.5 ms at 512x288)."""
        if self._fonts is None:
            self._fonts = (_font(self.height // 9), _font(self.height // 16))
        big, small = self._fonts
        background, accent = STATE_COLOURS.get(self.state, STATE_COLOURS["idle"])
        frame = np.empty((self.height, self.width, 3), np.uint8)
        frame[:] = background
        pad = self.width // 32
        r = self.height // 18
        _blend(frame, pad, pad + r // 2, self._dot(2 * r), accent)
        _blend(frame, pad + 3 * r, pad, self._line(STATE_LABELS.get(self.state, self.state),
                                                   big), accent)
        line_h = self.height // 13
        chars = max(10, int(self.width / (self.height / 16 * 0.5)) - 4)
        y = pad + 3 * r
        for label, text, colour, rows in (("You", self.heard, (200, 200, 210), 2),
                                          ("Bot", self.said, (255, 255, 255), 5)):
            if not text:
                continue
            for line in textwrap.wrap(f"{label}: {text}", chars)[-rows:]:
                if y + line_h > self.height:
                    break
                _blend(frame, pad, y, self._line(line, small), colour)
                y += line_h
            y += line_h // 2
        return frame

    def _line(self, text: str, font: Any) -> np.ndarray:
        key = (id(font), text)
        mask = self._masks.get(key)
        if mask is None:
            from PIL import Image, ImageDraw

            left, top, right, bottom = font.getbbox(text) if text else (0, 0, 1, 1)
            img = Image.new("L", (max(1, int(right) + 2), max(1, int(bottom) + 2)), 0)
            ImageDraw.Draw(img).text((0, 0), text, font=font, fill=255)
            mask = np.asarray(img)
            self._masks[key] = mask
            if len(self._masks) > 64:  # bounded: the oldest lines go
                self._masks.pop(next(iter(self._masks)))
        return mask

    def _dot(self, size: int) -> np.ndarray:
        key = (0, f"dot{size}")
        mask = self._masks.get(key)
        if mask is None:
            yy, xx = np.mgrid[0:size, 0:size]
            c = (size - 1) / 2
            mask = np.clip((c + 0.5 - np.hypot(yy - c, xx - c)) * 255, 0, 255).astype(np.uint8)
            self._masks[key] = mask
        return mask


def _blend(frame: np.ndarray, x: int, y: int, mask: np.ndarray,
           colour: tuple[int, int, int]) -> None:
    """Paint `colour` through an 8-bit alpha `mask` at (x, y), clipped to the frame. Text
    never overlaps and the background is one flat colour, so blending is a table lookup."""
    h = min(mask.shape[0], frame.shape[0] - y)
    w = min(mask.shape[1], frame.shape[1] - x)
    if h <= 0 or w <= 0:
        return
    background = frame[y, x].astype(np.float32)
    ramp = np.arange(256, dtype=np.float32)[:, None] / 255
    lut = (background + (np.asarray(colour, np.float32) - background) * ramp).astype(np.uint8)
    frame[y : y + h, x : x + w] = lut[mask[:h, :w]]


class BotVideoTrack(MediaStreamTrack):
    """Outgoing video of the bot: redrawn on change (≤ `fps`), else a keep-alive repeat."""

    kind = "video"

    def __init__(self, board: CaptionBoard | None = None, *, fps: float = 5.0,
                 keepalive_s: float = KEEPALIVE_S) -> None:
        super().__init__()
        self.board = board or CaptionBoard()
        self._interval = 1.0 / fps
        self._keepalive_s = keepalive_s
        self._frame: VideoFrame | None = None
        self._drawn_version = -1
        self._start: float | None = None
        self._last_sent = 0.0
        self.frames_sent = 0
        self.frames_drawn = 0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        board = self.board
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            # No faster than fps; then wait for a change, or re-send at the keep-alive rate.
            earliest = self._last_sent + self._interval
            if earliest > now:
                await asyncio.sleep(earliest - now)
            if board.version == self._drawn_version:
                board.changed.clear()
                wait = self._last_sent + self._keepalive_s - time.monotonic()
                if wait > 0:
                    try:
                        await asyncio.wait_for(board.changed.wait(), wait)
                    except TimeoutError:
                        pass
            if self.readyState != "live":
                raise MediaStreamError
        if board.version != self._drawn_version or self._frame is None:
            self._drawn_version = board.version
            self._frame = VideoFrame.from_ndarray(board.render(), format="rgb24")
            self.frames_drawn += 1
        self._last_sent = time.monotonic()
        frame = self._frame
        frame.pts = int((self._last_sent - self._start) * VIDEO_CLOCK)
        frame.time_base = _TIME_BASE
        self.frames_sent += 1
        return frame
