"""A call carried by a WebRTC peer connection: the caller's microphone and camera in, the bot's
paced voice (and caption video) out, events on a data channel."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcsctptransport import HeartbeatChunk, RTCSctpTransport

from callbot.pipeline import events as ev
from callbot.pipeline.audio import FRAME_SAMPLES, PIPELINE_RATE
from callbot.pipeline.vision import VisionSettings
from callbot.rtc.bot_video import BotVideoTrack, CaptionBoard
from callbot.rtc.ice import IceServer, announce_public_ip
from callbot.rtc.peer import (
    accept_offer,
    create_answer,
    new_peer_connection,
    shorten_audio_jitter_buffer,
)
from callbot.rtc.tracks import LatestVideoFrame, PacedAudioTrack, drain_video, pump_audio
from callbot.signalling.calls.call import EVENTS_LABEL
from callbot.signalling.calls.sight import show_event

if TYPE_CHECKING:
    from callbot.signalling.calls.call import Call

log = logging.getLogger(__name__)

MAX_UNSENT = 256  # events kept until the data channel opens
# A peer quiet this long is asked to answer (an SCTP HEARTBEAT, which any SCTP stack acks).
# A receive-only caller (no microphone) sends no RTP, and Chromium sends audio RTCP only every
# 2.5-7.5 s: without asking, a live text-only caller looks gone after the 5 s grace.
PROBE_AFTER_S = 1.0


class WebRtcTransport:
    kind = "webrtc"

    def __init__(self, ice_servers: Sequence[IceServer], *, vision: VisionSettings,
                 max_send_buffer_bytes: int, public_ip: str | None = None) -> None:
        self.pc: RTCPeerConnection = new_peer_connection(ice_servers)
        self._output = PacedAudioTrack()
        self._vision = vision
        self._max_send_buffer = max_send_buffer_bytes
        self._public_ip = public_ip
        self.video = LatestVideoFrame(history_s=vision.history_s)  # the caller's camera
        self.bot_video: BotVideoTrack | None = None  # added if the caller offers video
        self._call: Call | None = None
        self._channel: RTCDataChannel | None = None
        self._unsent: list[str] = []
        self._send_full_since: float | None = None
        self.events_dropped = 0  # not sent: buffer full, or over the peer's size limit
        self._packets_in = -1  # packets received from the peer, as last counted
        self._packets_at = time.monotonic()  # when that count last grew
        self._probed_at = 0.0  # when a quiet peer was last asked to answer
        self._probe: asyncio.Task[None] | None = None

    @property
    def output(self) -> PacedAudioTrack:
        return self._output

    def bind(self, call: Call) -> None:
        self._call = call
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        call.event_observers.append(self._show_on_video)

    async def answer(self, offer_sdp: str) -> str:
        """Negotiate (after `bind`); the SDP answer."""
        pc = self.pc
        await accept_offer(pc, offer_sdp)
        shorten_audio_jitter_buffer(pc)
        pc.addTrack(self._output)
        if self._vision.bot_video and any(t.kind == "video" for t in pc.getTransceivers()):
            # The caller offered video: answer with the bot's captions and state.
            self.bot_video = BotVideoTrack(CaptionBoard(), fps=self._vision.bot_video_fps)
            pc.addTrack(self.bot_video)
        sdp = await create_answer(pc)
        if self._public_ip:
            sdp = announce_public_ip(sdp, self._public_ip)
        return sdp

    def describe(self) -> dict[str, Any]:
        return {
            "ice_state": self.pc.iceConnectionState,
            "video_frames_in": self.video.frames_received,
            "video_frames_out": self.bot_video.frames_sent if self.bot_video else 0,
        }

    # ---- from the peer ----------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        call = self._call
        assert call is not None
        if track.kind == "audio":
            call.spawn(pump_audio(track, call.caller_audio, rate=PIPELINE_RATE,
                                  frame_samples=FRAME_SAMPLES), "audio-in")
        elif track.kind == "video":
            call.spawn(drain_video(track, self.video), "video-in")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        call = self._call
        assert call is not None
        protocol = call.protocol
        if channel.label != (EVENTS_LABEL if protocol is None else protocol.label):
            return
        self._channel = channel
        channel.on("message", call.peer_message)
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    async def _on_connection_state(self) -> None:
        call = self._call
        assert call is not None
        state = self.pc.connectionState
        if state == "connected":
            call.transport_state("active")
        elif state in ("failed", "closed"):
            await call.close(f"ice_{state}")

    def last_heard(self, now: float) -> float:
        """When a packet (RTP, RTCP, data channel, SCTP ack) last came from the peer.

        aiortc has no 'disconnected' state: a peer that vanishes without closing (crash,
        network loss) only fails ICE consent after ~30 s. A peer with a microphone sends RTP
        every 20 ms; one without may send only RTCP, seconds apart (Chromium: 2.5-7.5 s), or
        nothing at all between typed messages. So a peer quiet for `PROBE_AFTER_S` is sent an
        SCTP HEARTBEAT each second: a live one acks it (a packet counted here), a gone one
        cannot, and silence past the grace still means it is gone.
        """
        pc = self.pc
        transports = [t.receiver.transport for t in pc.getTransceivers()]
        if pc.sctp is not None:
            transports.append(pc.sctp.transport)
        received = 0
        for transport in {id(t): t for t in transports if t is not None}.values():
            for stats in transport._get_stats().values():
                received += getattr(stats, "packetsReceived", 0)
        if received != self._packets_in:
            self._packets_in, self._packets_at = received, now
        elif now - self._packets_at > PROBE_AFTER_S and now - self._probed_at >= PROBE_AFTER_S:
            self._probed_at = now
            self._ask_peer(pc.sctp)
        return self._packets_at

    def _ask_peer(self, sctp: RTCSctpTransport | None) -> None:
        """Send an SCTP HEARTBEAT (RFC 9260 8.3): the peer's stack acks it, whatever its
        application does. Without a data channel there is nothing to ask: RTCP must do."""
        if (sctp is None or sctp.state != "connected"
                or (self._probe is not None and not self._probe.done())):
            return
        chunk = HeartbeatChunk()
        # Heartbeat Info (type 1): opaque to the peer, echoed back in the ack.
        chunk.params = [(1, os.urandom(8))]
        self._probe = asyncio.ensure_future(self._send_probe(sctp, chunk))

    @staticmethod
    async def _send_probe(sctp: RTCSctpTransport, chunk: HeartbeatChunk) -> None:
        try:
            await sctp._send_chunk(chunk)  # aiortc has no public heartbeat; its own send path
        except Exception as exc:  # the transport is closing: the watchdog decides
            log.debug("heartbeat not sent: %s", exc)

    # ---- to the peer ------------------------------------------------------------------------

    def _show_on_video(self, event: ev.Event) -> None:
        if self.bot_video is not None:
            show_event(self.bot_video.board, event)

    def send(self, message: str) -> None:
        """One message on the data channel (kept until the channel opens, bounded)."""
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            self._send(channel, message)
        elif len(self._unsent) < MAX_UNSENT:
            self._unsent.append(message)

    def send_stalled_since(self) -> float | None:
        return self._send_full_since

    def _send(self, channel: RTCDataChannel, message: str) -> None:
        """Send, or drop: past the send-buffer bound (a peer that stops reading), or a message
        over the peer's `max-message-size`. Never raises: a lost event must not end the call."""
        if channel.bufferedAmount + len(message) > self._max_send_buffer:
            self.events_dropped += 1
            if self._send_full_since is None:
                self._send_full_since = time.monotonic()
                log.warning("the peer is not reading its data channel (%d bytes unsent): "
                            "dropping events", channel.bufferedAmount)
            return
        self._send_full_since = None
        try:
            channel.send(message)
        except Exception as exc:  # e.g. over the max-message-size the offer announced
            self.events_dropped += 1
            log.debug("event dropped: %s", exc)

    def _flush(self) -> None:
        channel = self._channel
        if channel is None:
            return
        for message in self._unsent:
            self._send(channel, message)
        self._unsent.clear()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        self._output.stop()
        if self.bot_video is not None:
            self.bot_video.stop()
        self._unsent.clear()
        self.video.clear()
        await self.pc.close()
