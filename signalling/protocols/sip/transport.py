"""A call carried by a SIP dialog and its RTP stream (`calls.call.CallTransport`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiortp import RTPSession
from aiosipua import DialogState, IncomingCall

from callbot.pipeline import events as ev
from callbot.signalling.protocols.sip.media import PhoneInput, PhoneOutput

if TYPE_CHECKING:
    from callbot.signalling.calls.call import Call

log = logging.getLogger(__name__)

# Digits pressed within this long of each other are one entry ("1 2 3 4"): one turn for the
# LLM, not one reply per key. Each digit is its own `dtmf` event at once.
DIGIT_GAP_S = 1.5
ACK_WAIT_STEPS = 40  # x 50 ms: how long a BYE waits for the caller's ACK


class SipTransport:
    kind = "sip"

    def __init__(self, dialog: IncomingCall, rtp: RTPSession, *, rtp_port: int,
                 release: Callable[[], Awaitable[None]]) -> None:
        self.dialog = dialog
        self.rtp = rtp
        self.rtp_port = rtp_port
        self._release = release  # the RTP port pair back to the allocator, the dialog forgotten
        self._output = PhoneOutput()
        self._call: Call | None = None
        self._heard_at = time.monotonic()
        self.remote_ended = False  # the caller sent BYE/CANCEL: no BYE back
        self.digits: list[str] = []  # every digit pressed in this call
        self._entry: list[str] = []
        self._entry_timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def output(self) -> PhoneOutput:
        return self._output

    def bind(self, call: Call) -> None:
        self._call = call
        audio_in = PhoneInput(call.caller_audio)

        def on_audio(pcm: bytes, timestamp: int) -> None:
            self._heard_at = time.monotonic()
            audio_in.push(pcm)

        self.rtp.on_audio = on_audio
        self.rtp.on_dtmf = self._on_dtmf
        call.spawn(self._output.run(self.rtp), "rtp-out")
        call.transport_state("active")  # the 200 OK goes out with the answer: the call is up

    def _on_dtmf(self, digit: str, duration: int) -> None:
        call = self._call
        if call is None or self._closed:
            return
        self._heard_at = time.monotonic()
        self.digits.append(digit)
        call.send_event(ev.Dtmf(digit=digit))  # hooks, listeners, the caller's event stream
        self._entry.append(digit)
        if self._entry_timer is not None:
            self._entry_timer.cancel()
        self._entry_timer = asyncio.get_running_loop().call_later(DIGIT_GAP_S, self._entry_done)

    def _entry_done(self) -> None:
        """The caller stopped pressing keys: the LLM hears the entry as the caller's turn."""
        self._entry_timer = None
        call, digits = self._call, self._entry
        self._entry = []
        if call is None or self._closed or not digits:
            return
        keys = ", ".join(digits)
        call.session.add_context(f"The caller pressed {keys} on the phone keypad.")
        call.session.submit_text(f"(I pressed {keys} on my phone's keypad.)")

    def send(self, message: str) -> None:
        """A phone has no event channel: the events go to hooks and listeners only."""

    def last_heard(self, now: float) -> float | None:
        return self._heard_at  # RTP every 20 ms (or a digit): silence past the grace is a gone peer

    def send_stalled_since(self) -> float | None:
        return None

    def describe(self) -> dict[str, Any]:
        stats = self.rtp.stats
        return {
            "sip_call_id": self.dialog.call_id,
            "sip_from": self.dialog.caller,
            "rtp_port": self.rtp_port,
            "rtp_packets_in": stats.get("packets_received", 0),
            "dtmf_digits": "".join(self.digits),
        }

    async def _bye(self) -> None:
        """BYE to the caller. RFC 3261 15: not before the ACK of our 200 OK; a call ended at
        once waits for it (briefly), then says BYE anyway."""
        dialog = self.dialog
        for _ in range(ACK_WAIT_STEPS):
            if dialog.dialog.state != DialogState.EARLY:
                break
            await asyncio.sleep(0.05)
        dialog._stop_retransmissions()
        if dialog.dialog.state == DialogState.EARLY and dialog._answered:
            dialog.dialog.confirm()
        dialog.hangup()  # a no-op unless the dialog is up

    def send_dtmf(self, digit: str) -> None:
        """The bot presses a key (RFC 4733), e.g. to steer an IVR it called."""
        self.rtp.send_dtmf(digit)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._entry_timer is not None:
            self._entry_timer.cancel()
        self._output.clear()
        if not self.remote_ended:
            await self._bye()
        try:
            await self.rtp.close()
        finally:
            await self._release()
