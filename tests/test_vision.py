"""The vision stage on its own: real OCR (RapidOCR) of rendered English and Chinese signs,
real face detection (OpenCV Haar cascades) on a real photo, the trigger rule, the scene note,
bad frames, the OpenAI-compatible request shape, and the bot's caption video."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from av import VideoFrame

from callbot.pipeline import events as ev
from callbot.pipeline.augment import TurnRequest
from callbot.pipeline.engines import Engines
from callbot.pipeline.fakes import (
    EventRecorder,
    MemoryOutput,
    ScriptedASR,
    ScriptedLLM,
    ScriptedTTS,
)
from callbot.pipeline.session import VoiceSession
from callbot.pipeline.vision import CameraFrame, SceneReading, VisionSource, needs_picture
from callbot.pipeline.vision.frames import downscale, fit_within, is_blank
from callbot.pipeline.vision.offline import OfflineVision, scene_note
from callbot.pipeline.vision.openai_vision import OpenAIVision
from callbot.pipeline.vision.source import NO_VIDEO, NOTHING_USABLE
from callbot.rtc.bot_video import BotVideoTrack, CaptionBoard
from callbot.rtc.tracks import LatestVideoFrame
from callbot.signalling.calls.sight import camera_frames, show_event
from support.vision_frames import CJK_FONT, face_photo, scenery, sign


@pytest.fixture(scope="module")
def offline() -> OfflineVision:
    engine = OfflineVision(threads=2, max_side=960)
    engine.warm_up()
    return engine


def still(image: np.ndarray, age_s: float = 0.1) -> CameraFrame:
    def to_rgb(max_side: int) -> np.ndarray:
        return downscale(image, max_side)

    return CameraFrame(width=image.shape[1], height=image.shape[0], age_s=age_s, to_rgb=to_rgb)


# ---- OCR and faces (real models) -----------------------------------------------------------


def test_reads_an_english_sign(offline: OfflineVision) -> None:
    reading = offline.read(sign(["FRESH COFFEE", "OPEN 7 DAYS"]))
    assert "FRESH COFFEE" in reading.text and "OPEN 7 DAYS" in reading.text
    assert reading.text.index("FRESH") < reading.text.index("OPEN")  # top line first
    assert reading.note.startswith('I can read: "FRESH COFFEE')
    assert "can't describe images in more detail" in reading.note


def test_reads_a_chinese_sign(offline: OfflineVision) -> None:
    reading = offline.read(sign(["出口在左边"], font=CJK_FONT, font_px=72))
    assert "出口在左边" in reading.text


def test_sees_a_face_and_says_no_more(offline: OfflineVision) -> None:
    reading = offline.read(face_photo())
    assert reading.faces == 1
    assert "I can see one person." in reading.note
    assert "can't describe images in more detail in offline mode" in reading.note


def test_no_face_no_text_says_so_plainly(offline: OfflineVision) -> None:
    reading = offline.read(scenery())
    assert reading.faces == 0 and reading.text == "" and not reading.usable
    assert "shows nothing I can read" in reading.note


def test_scene_note_never_claims_more_than_it_found() -> None:
    assert scene_note([], 2).note.startswith("I can see 2 people.")
    note = scene_note(["EXIT"], 0).note
    assert '"EXIT"' in note and "person" not in note and "people" not in note


# ---- when to look ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "What does the sign say?", "what do you see", "Can you see me?", "Read me this label.",
    "What am I holding?", "Look at my screen, please.", "what's this?",
    "这上面写的是什么？", "你能看到我吗", "Was steht auf dem Schild?", "Siehst du mich?",
    "Qu'est-ce qui est écrit ici ?", "Tu me vois ?", "¿Qué dice el letrero?", "¿Me ves?",
])
def test_questions_about_the_picture_trigger_vision(text: str) -> None:
    assert needs_picture(text)


@pytest.mark.parametrize("text", [
    "How many legs does a spider have?", "Tell me a joke.", "I see, thanks.",
    "See you later!", "What did you say?", "I'm looking forward to it.", "",
    "今天天气怎么样？", "Wie spät ist es?", "Quelle heure est-il ?", "¿Cuántos años tienes?",
])
def test_other_questions_do_not(text: str) -> None:
    assert not needs_picture(text)


# ---- the context source ------------------------------------------------------------------------


class Counting:
    """Wraps a real engine and counts how often it is asked."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_side = inner.max_side
        self.calls = 0
        self.busy = False

    def warm_up(self) -> None: ...

    def close(self) -> None: ...

    async def describe(self, image: np.ndarray, *, question: str,
                       language: str | None = None) -> SceneReading:
        self.calls += 1
        result: SceneReading = await self.inner.describe(image, question=question,
                                                         language=language)
        return result


async def test_a_turn_not_about_the_picture_costs_nothing(offline: OfflineVision) -> None:
    engine = Counting(offline)
    asked = 0

    def frames() -> tuple[CameraFrame, ...]:
        nonlocal asked
        asked += 1
        return (still(sign(["HELLO"])),)

    source = VisionSource(engine, frames)
    started = time.perf_counter()
    assert await source.context_for(TurnRequest("Tell me a joke.", "en")) is None
    assert (time.perf_counter() - started) < 0.01
    assert engine.calls == 0 and asked == 0


async def test_look_flag_and_question_both_read_the_frame(offline: OfflineVision) -> None:
    source = VisionSource(Counting(offline), lambda: (still(sign(["PUSH"])),))
    typed = await source.context_for(TurnRequest("and now?", "en", look=True))
    spoken = await source.context_for(TurnRequest("What does the sign say?", "en"))
    for result in (typed, spoken):
        assert result is not None and '"PUSH"' in result.notes
        assert result.timings["vision_ms"] > 0
        (used,) = result.events
        assert isinstance(used, ev.VisionUsed) and used.engine == "offline-ocr"


async def test_no_video_black_camera_and_stopped_camera(offline: OfflineVision) -> None:
    ask = TurnRequest("what do you see?", "en")
    no_video = await VisionSource(offline, lambda: None).context_for(ask)
    assert no_video is not None and no_video.notes == NO_VIDEO
    black = np.zeros((480, 640, 3), np.uint8)
    dark = await VisionSource(offline, lambda: (still(black),)).context_for(ask)
    assert dark is not None and dark.notes == NOTHING_USABLE
    stale = await VisionSource(offline, lambda: (still(sign(["EXIT"]), age_s=9),)
                               ).context_for(ask)
    assert stale is not None and "stopped sending pictures 9 seconds ago" in stale.notes
    assert '"EXIT"' in stale.notes
    # The camera shows black now, but a sign was held up two seconds ago.
    recent = await VisionSource(offline, lambda: (still(black), still(sign(["EXIT"]), 2.0))
                                ).context_for(ask)
    assert recent is not None and "2 seconds ago" in recent.notes and '"EXIT"' in recent.notes


async def test_the_note_reaches_the_prompt_with_metrics_and_event(offline: OfflineVision
                                                                  ) -> None:
    llm = ScriptedLLM("It says fresh coffee.", first_token_s=0.01)
    engines = Engines(asr=ScriptedASR([]), llm=llm, tts=ScriptedTTS())
    recorder = EventRecorder()
    source = VisionSource(offline, lambda: (still(sign(["FRESH COFFEE"])),))
    session = VoiceSession(engines, output=MemoryOutput(), emit=recorder,
                           context_sources=[source])
    try:
        session.submit_text("What does the sign say?")
        metrics = await recorder.wait_for("metrics", timeout=30)
        assert metrics["vision_ms"] > 0
        (used,) = recorder.all("vision.used")
        assert used["engine"] == "offline-ocr"
        prompt = "\n".join(str(m["content"]) for m in llm.requests[-1])
        assert 'I can read: "FRESH COFFEE"' in prompt
        session.submit_text("How many legs does a spider have?")
        await asyncio.sleep(0.3)
        assert len(recorder.all("vision.used")) == 1  # the second turn did not look
    finally:
        await session.close()


# ---- bad frames at the media layer -------------------------------------------------------------


def test_huge_odd_and_many_frames_stay_bounded() -> None:
    latest = LatestVideoFrame(history_s=6.0)
    latest.started = True
    now = 100.0
    uhd = VideoFrame.from_ndarray(np.zeros((2160, 3840, 3), np.uint8), format="rgb24")
    for i in range(600):  # 10 s of 60 fps 4K
        latest.put(uhd, now + i / 60)
    assert latest.frames_received == 600 and len(latest.history) <= 6
    frames = camera_frames(latest, now=now + 10)
    assert frames is not None and 1 <= len(frames) <= 7
    image = frames[0].to_rgb(960)
    assert image.shape == (540, 960, 3)
    odd = VideoFrame.from_ndarray(np.full((479, 641, 3), 128, np.uint8), format="rgb24")
    latest.put(odd, now + 11)
    frames = camera_frames(latest, now=now + 11)
    assert frames is not None and frames[0].to_rgb(960).shape[:2] == fit_within(641, 479, 960)[::-1]
    assert is_blank(frames[0].to_rgb(320))
    assert camera_frames(LatestVideoFrame()) is None  # no video track at all


# ---- the OpenAI-compatible vision endpoint ------------------------------------------------------


@pytest.fixture
async def vision_server(unused_tcp_port: int) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local stand-in for a multimodal chat server: no vision model exists offline, so it
    checks the request shape strictly and answers with a fixed description."""
    seen: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer sk-test"
        body = await request.json()
        seen.append(body)
        return web.json_response({"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": 'A person holds a sign that reads "EXIT".'}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    yield f"http://127.0.0.1:{unused_tcp_port}/v1", seen
    await runner.cleanup()


async def test_openai_compatible_request_shape(
        vision_server: tuple[str, list[dict[str, Any]]]) -> None:
    from PIL import Image

    base_url, seen = vision_server
    engine = OpenAIVision(base_url, "llava-test", api_key="sk-test", max_side=512)
    big = sign(["EXIT"], size=(1280, 720))
    source = VisionSource(engine, lambda: (still(big),))
    result = await source.context_for(TurnRequest("Can you see me?", "en"))
    assert result is not None and '"EXIT"' in result.notes
    assert result.notes.startswith("A vision model looked at the camera picture")
    (body,) = seen
    assert body["model"] == "llava-test" and body["stream"] is False
    system, user = body["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    text_part, image_part = user["content"]
    assert text_part == {"type": "text", "text": "The caller asks: Can you see me?"}
    assert image_part["type"] == "image_url"
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert picture.format == "JPEG" and max(picture.size) <= 512
    engine.close()


# ---- the bot's video ---------------------------------------------------------------------------


def test_caption_board_shows_state_and_captions() -> None:
    board = CaptionBoard()
    idle = board.render()
    show_event(board, ev.BotState(state="speaking"))
    show_event(board, ev.TranscriptFinal(text="what does the sign say", turn_id=1))
    show_event(board, ev.ResponseTextDelta(delta="It says EXIT.", turn_id=1))
    speaking = board.render()
    assert idle.shape == speaking.shape == (288, 512, 3)
    assert float(np.abs(idle.astype(int) - speaking.astype(int)).mean()) > 5
    assert speaking.std() > 10  # not blank


async def test_bot_video_sends_nothing_new_when_nothing_changes() -> None:
    track = BotVideoTrack(fps=10, keepalive_s=0.5)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.6:
            await track.recv()
        assert track.frames_drawn == 1  # drawn once
        assert track.frames_sent <= 5  # then only keep-alive repeats (about 2 a second)
        sent = track.frames_sent
        show_event(track.board, ev.BotState(state="thinking"))
        frame = await asyncio.wait_for(track.recv(), 0.5)  # a change goes out at once
        assert track.frames_drawn == 2 and track.frames_sent == sent + 1
        assert frame.width == 512
        for i in range(30):  # a burst of changes: coalesced to at most fps frames a second
            show_event(track.board, ev.ResponseTextDelta(delta=f" word{i}", turn_id=2))
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            await track.recv()
        assert track.frames_sent - sent <= 13
    finally:
        track.stop()
