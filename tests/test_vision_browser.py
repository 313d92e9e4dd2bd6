"""Sight in a real browser: headless Chromium's fake camera plays a generated Y4M of a printed
sign, its fake microphone asks "What does the sign say?"; the page gets the sign's words back
and shows the bot's own video tile, whose captions change as the call goes on (frames are
decoded in the page and compared here).

Run inside a loopback-only network namespace (see tests/test_browser.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support import speech
from support.browser import CHROMIUM, chromium_page
from support.vision_frames import sign
from tests.conftest import ServerFactory
from tests.test_browser import _events, _wait_event
from tests.test_vision_e2e import VISION_CONFIG

pytestmark = pytest.mark.e2e

QUESTION = "What does the sign say?"


def write_y4m(path: Path, image: np.ndarray, frames: int = 30, fps: int = 15) -> Path:
    """A Y4M video (4:2:0) showing `image` (RGB): what Chromium's fake camera plays."""
    import cv2

    h, w = image.shape[:2]
    i420 = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n")
            out.write(i420.tobytes())
    return path


def camera_page(wav: Path, y4m: Path) -> AbstractAsyncContextManager[Any]:
    """The demo page in Chromium with `wav` as its microphone and `y4m` as its camera."""
    return chromium_page(wav, viewport=(900, 900),
                         extra_args=(f"--use-file-for-fake-video-capture={y4m}",))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("vision-browser")
    # 2.5 s of silence (the camera settles, the first captions are drawn), then the question.
    wav = speech.espeak(QUESTION, 48_000).padded(2.5, 3.0).write_wav(folder / "question.wav")
    return wav, write_y4m(folder / "sign.y4m", sign(["FRESH COFFEE"]))


async def snapshot(page: Any) -> np.ndarray:
    grey = await page.evaluate("window.callbotVideo.snapshot()")
    assert grey is not None, "the bot's video tile shows nothing"
    return np.array(grey, dtype=np.float64)


async def test_browser_camera_sign_question_and_bot_captions(
        start_server: ServerFactory, media: tuple[Path, Path]) -> None:
    base = await start_server(VISION_CONFIG)
    wav, y4m = media
    async with camera_page(wav, y4m) as page:
        await page.goto(f"{base}/")
        await page.check("#camera")
        await page.click("#call")
        await page.wait_for_function("window.callbot.pc?.connectionState === 'connected'")
        # The bot's tile: its video track arrives and frames are painted.
        await page.wait_for_function("window.callbotVideo.frames > 0", timeout=15_000)
        assert await page.locator("#bot-video").is_visible()
        before = await snapshot(page)

        await _wait_event(page, "transcript.final", timeout_s=40)
        heard = (await _events(page, "transcript.final"))[0]["text"].lower()
        speech.assert_heard(heard, QUESTION)
        await _wait_event(page, "vision.used", timeout_s=40)
        await _wait_event(page, "metrics", timeout_s=60)
        (metrics,) = await _events(page, "metrics")
        assert metrics["vision_ms"] > 0
        reply = "".join(e["delta"] for e in await _events(page, "response.text.delta"))
        # OCR of a camera picture may drop the space ("FRESHCOFFEE"): look for the words.
        assert re.search(r"fresh|coffee", reply, re.IGNORECASE), reply
        assert "Looked at your picture" in await page.locator("#vision-note").inner_text()

        # The captions changed: decode the tile again once the reply text has been drawn.
        deadline = time.monotonic() + 10
        after = await snapshot(page)
        while time.monotonic() < deadline and np.abs(after - before).mean() < 2:
            await asyncio.sleep(0.3)
            after = await snapshot(page)
        for picture in (before, after):
            assert picture.std() > 3, "a blank bot video frame"
        assert np.abs(after - before).mean() >= 2, "the bot's captions did not change"

        await page.click("#hangup")
        # Hang-up sends DELETE first and closes the peer after it: the tile hides then.
        await page.locator("#bot-video").wait_for(state="hidden", timeout=5000)
