"""Glue between a call's media (rtc) and the vision stage (pipeline): the camera frames the
vision stage reads, and the call events the bot's caption video shows. The two layers do not
import each other; the call wires them here."""

from __future__ import annotations

import functools

from callbot.pipeline import events as ev
from callbot.pipeline.vision import CameraFrame
from callbot.rtc.bot_video import CaptionBoard
from callbot.rtc.tracks import LatestVideoFrame, frame_to_rgb


def camera_frames(latest: LatestVideoFrame, now: float | None = None
                  ) -> tuple[CameraFrame, ...] | None:
    """`pipeline.vision.FrameSource` for one call: newest first; None without video."""
    if not latest.started:
        return None
    return tuple(
        CameraFrame(width=frame.width, height=frame.height, age_s=age,
                    to_rgb=functools.partial(frame_to_rgb, frame))
        for age, frame in latest.recent(now))


def show_event(board: CaptionBoard, event: ev.Event) -> None:
    """Follow the call's own events (the same ones the caller gets) on the bot's video."""
    if isinstance(event, ev.BotState):
        board.set_state(event.state)
    elif isinstance(event, ev.TranscriptPartial | ev.TranscriptFinal):
        board.set_heard(event.text)
    elif isinstance(event, ev.ResponseTextDelta):
        board.add_said(event.turn_id, event.delta)
    elif isinstance(event, ev.ResponseInterrupted):
        board.set_said(event.spoken_text + " …" if event.spoken_text else "")
