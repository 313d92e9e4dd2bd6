"""Sight end to end: a real aiortc caller sends a camera track showing a printed sign to the
real server (offline vision: RapidOCR + face cascade; SmolLM2; Whisper; Piper) and asks about
it, typed and spoken; it also receives the bot's caption video.

What is asserted about the answer is what a 135M-parameter model can be relied on for: the
scene note always reaches the prompt (the `vision.used` event and `vision_ms` show the frame
was read), and the reply text contains at least one word of the sign. The note is built so
the model mostly repeats it ('If asked what it says, answer: It says "..."').
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from callbot.loadtest.caller import SyntheticCaller
from callbot.pipeline.engines import Engines
from callbot.pipeline.vision import VisionSettings
from callbot.pipeline.vision.source import NO_VIDEO, NOTHING_USABLE
from callbot.signalling.app import create_app
from callbot.signalling.config import Limits
from callbot.signalling.server.state import STATE
from support import speech
from support.vision_frames import sign
from tests.conftest import TEST_CONFIG, ServerFactory
from tests.test_call_e2e import speak

pytestmark = pytest.mark.e2e

SIGN_WORDS = ["FRESH", "COFFEE"]
VISION_CONFIG = TEST_CONFIG.replace(vision=VisionSettings(engine="offline"),
                                    limits=Limits(call_rate_per_minute=100_000))


@pytest.fixture(scope="module")
async def vision_app(engines: Engines) -> web.Application:
    return create_app(VISION_CONFIG, engines=engines)


@pytest.fixture(scope="module")
async def vision_server(start_server: ServerFactory, vision_app: web.Application) -> str:
    return await start_server(app=vision_app)


def last_note(app: web.Application, caller: SyntheticCaller) -> str:
    """What the caller's last vision turn put into the LLM's prompt (server side)."""
    assert caller.call_id is not None
    call = app[STATE].registry.get(caller.call_id)
    assert call is not None and call.vision is not None
    return call.vision.last_note or ""


def reply_of(caller: SyntheticCaller, turn_id: int) -> str:
    return "".join(e["delta"] for e in caller.events_of("response.text.delta")
                   if e["turn_id"] == turn_id)


def sign_words_in(text: str) -> set[str]:
    # OCR may drop the space between the words ("FRESHCOFFEE"): match them inside words.
    return {w for w in SIGN_WORDS if re.search(w, text, re.IGNORECASE)}


async def wait_reply(caller: SyntheticCaller, after: int) -> tuple[dict, dict, str]:
    used = await caller.wait_event("vision.used", 60, after=after)
    metrics = await caller.wait_event("metrics", 60, after=after)
    return used, metrics, reply_of(caller, metrics["turn_id"])


async def test_healthz_reports_vision_and_bot_video(vision_server: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{vision_server}/healthz") as resp:
        body = await resp.json()
    assert body["vision"] == "offline-ocr" and body["bot_video"] is True


async def test_typed_and_spoken_questions_about_a_sign(vision_server: str,
                                                      vision_app: web.Application) -> None:
    caller = SyntheticCaller(vision_server, video_image=sign(["FRESH COFFEE"]))
    try:
        await caller.connect()
        await asyncio.sleep(2.0)  # the video encoder's first frames are coarse
        # Typed, with the look flag.
        start = len(caller.events)
        caller.send({"type": "input.text", "text": "What does the sign say?", "look": True})
        used, metrics, typed_reply = await wait_reply(caller, start)
        assert used["engine"] == "offline-ocr" and used["ms"] > 0
        assert metrics["vision_ms"] > 0
        assert 'I can read: "FRESH' in last_note(vision_app, caller)
        assert sign_words_in(typed_reply), typed_reply

        # A turn not about the picture does not look.
        start = len(caller.events)
        caller.send({"type": "input.text", "text": "How many legs does a spider have?"})
        await caller.wait_event("metrics", 60, after=start)
        assert not [e for _, e in caller.events[start:] if e["type"] == "vision.used"]
        metrics = [e for _, e in caller.events[start:] if e["type"] == "metrics"][0]
        assert "vision_ms" not in metrics

        # Spoken: the transcript rule decides to look.
        await caller.wait_event("response.audio.done", 60, after=start)
        await asyncio.sleep(0.5)
        start = len(caller.events)
        clip = speech.espeak("What does the sign say?", 48_000).padded(0.3, 1.5)
        await speak(caller, clip)
        final = await caller.wait_event("transcript.final", 30, after=start)
        speech.assert_heard(final["text"], clip.text)
        used, metrics, spoken_reply = await wait_reply(caller, start)
        assert metrics["vision_ms"] > 0
        assert sign_words_in(spoken_reply), spoken_reply

        # The bot's own video arrived (the caller sent video) and shows something.
        assert caller.bot_frames_received > 0
        _, last = caller.bot_frames[-1]
        assert last.std() > 5
    finally:
        await caller.hangup()


async def test_black_camera_is_reported_plainly(vision_server: str,
                                                vision_app: web.Application) -> None:
    caller = SyntheticCaller(vision_server, video_image=np.zeros((480, 640, 3), np.uint8))
    try:
        await caller.connect()
        await asyncio.sleep(1.0)
        start = len(caller.events)
        caller.send({"type": "input.text", "text": "Can you read this?", "look": True})
        used, metrics, reply = await wait_reply(caller, start)
        assert metrics["vision_ms"] >= 0 and used["engine"] == "offline-ocr"
        assert last_note(vision_app, caller) == NOTHING_USABLE  # no invented reading
        assert reply.strip()  # and the call goes on: the bot answered
    finally:
        await caller.hangup()


async def test_callers_without_video_get_no_bot_video(vision_server: str,
                                                      vision_app: web.Application) -> None:
    caller = SyntheticCaller(vision_server)
    try:
        await caller.connect()
        kinds = [t.kind for t in caller.pc.getTransceivers()]
        assert kinds == ["audio"]
        start = len(caller.events)
        caller.send({"type": "input.text", "text": "Can you see me?"})
        await wait_reply(caller, start)
        assert last_note(vision_app, caller) == NO_VIDEO
        assert caller.bot_frames_received == 0
    finally:
        await caller.hangup()
