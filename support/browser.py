"""Headless Chromium with fake media from files, for tests and benchmarks (Debian `chromium`)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


def chromium_args(wav: Path, loop: bool = False) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}" + ("" if loop else "%noloop"),
        "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection",
    ]


@asynccontextmanager
async def chromium_page(wav: Path, *, loop: bool = False, viewport: tuple[int, int] = (900, 760),
                        color_scheme: str = "light", extra_args: tuple[str, ...] = ()
                        ) -> AsyncIterator[Any]:
    """A page in a fresh headless Chromium whose microphone plays `wav` once (or in a loop);
    `extra_args` add Chromium flags (e.g. a fake camera from a .y4m file)."""
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="callbot-chromium-")
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True,
                args=[*chromium_args(wav, loop), *extra_args],
                viewport={"width": viewport[0], "height": viewport[1]},
                color_scheme=color_scheme,  # type: ignore[arg-type]
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                page.set_default_timeout(30_000)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                yield page
                assert not errors, f"uncaught errors in the page: {errors}"
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# A microphone the test can speak into at a moment of its choosing: getUserMedia returns a
# Web Audio stream, and __fakeMic.say(base64 WAV) plays a clip into it (the page and the
# server get it like any microphone's audio; only its source is the test).
FAKE_MIC = """
navigator.mediaDevices.getUserMedia = async () => {
  const ctx = new AudioContext({sampleRate: 48000});
  await ctx.resume();
  const dest = ctx.createMediaStreamDestination();
  window.__fakeMic = {
    say: async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const buf = await ctx.decodeAudioData(bytes.buffer);
      const src = ctx.createBufferSource();
      src.buffer = buf;
      src.connect(dest);
      src.start();
    },
  };
  return dest.stream;
};
"""
