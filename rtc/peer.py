"""Peer connection set-up for one call."""

from __future__ import annotations

from collections.abc import Sequence

from aiortc import RTCPeerConnection, RTCSessionDescription

from .ice import IceServer, rtc_configuration


def new_peer_connection(ice_servers: Sequence[IceServer] = ()) -> RTCPeerConnection:
    """A peer connection with an explicit ICE configuration (never aiortc's default STUN)."""
    return RTCPeerConnection(rtc_configuration(ice_servers))


async def accept_offer(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Apply the caller's offer. Raises ValueError on an SDP aiortc cannot use."""
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))


async def create_answer(pc: RTCPeerConnection) -> str:
    """Answer with all candidates gathered (aiortc does not trickle)."""
    answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    return pc.localDescription.sdp
