"""Peer connection set-up for one call."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer

from .errors import NegotiationError
from .ice import IceServer, rtc_configuration


def new_peer_connection(ice_servers: Sequence[IceServer] = ()) -> RTCPeerConnection:
    """A peer connection with an explicit ICE configuration (never aiortc's default STUN)."""
    return RTCPeerConnection(rtc_configuration(ice_servers))


async def accept_offer(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Apply the caller's offer. Raises NegotiationError on an SDP aiortc cannot use."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    except NegotiationError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise NegotiationError(str(exc) or type(exc).__name__) from exc


log = logging.getLogger(__name__)

# aiortc holds each received audio packet until 4 more have arrived (80 ms): a playout buffer
# for a loudspeaker. Our consumer is VAD and ASR, which do not care about arrival jitter, so
# one packet of look-ahead (to put a swapped pair back in order) is all the delay we keep.
SERVER_AUDIO_PREFETCH = 1


def shorten_audio_jitter_buffer(pc: RTCPeerConnection, prefetch: int = SERVER_AUDIO_PREFETCH
                                ) -> None:
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        attr = "_RTCRtpReceiver__jitter_buffer"
        if transceiver.kind == "audio" and hasattr(receiver, attr):
            setattr(receiver, attr, JitterBuffer(capacity=16, prefetch=prefetch))
        elif transceiver.kind == "audio":
            log.warning("aiortc internals changed: audio jitter buffer left at its default")


async def create_answer(pc: RTCPeerConnection) -> str:
    """Answer with all candidates gathered (aiortc does not trickle)."""
    answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    return pc.localDescription.sdp
