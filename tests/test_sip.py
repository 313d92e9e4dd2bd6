"""The phone line: a real SIP softphone (Debian's baresip) calls callbot on loopback.

baresip plays a WAV question as its microphone (`aufile`, padded with silence so the call
does not end with the file) and records what it hears (`sndfile`); it is driven over its
`ctrl_tcp` socket (dial, DTMF, hang up). The SIP floods and refusals use raw UDP INVITEs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import uuid
import wave
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from callbot.pipeline import events as ev
from callbot.pipeline.audio import PIPELINE_RATE
from callbot.pipeline.engines import Engines
from callbot.signalling.app import SIP_LINE, create_app
from callbot.signalling.calls.handle import CallHandle
from callbot.signalling.calls.hooks import CallHooks
from callbot.signalling.config import CallbotConfig, SipSettings
from callbot.signalling.protocols.sip.line import SipLine
from callbot.signalling.server.state import STATE
from support import speech
from tests.conftest import LOOPBACK, TEST_CONFIG

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def sip_config(**sip: Any) -> CallbotConfig:
    settings = SipSettings(enabled=True, host=LOOPBACK, port=free_udp_port(),
                           rtp_port_min=31000, rtp_port_max=31400, **sip)
    return replace(TEST_CONFIG, sip=settings)


class Recorder:
    """The hooks' view of the calls: every call started, its events, how it ended."""

    def __init__(self) -> None:
        self.handles: list[CallHandle] = []
        self.events: list[ev.Event] = []
        self.ended: list[str] = []
        self.started = asyncio.Event()
        self.ended_event = asyncio.Event()

    def hooks(self) -> CallHooks:
        def started(call: CallHandle) -> None:
            self.handles.append(call)
            call.subscribe(self.events.append)
            self.started.set()

        def ended(call: CallHandle, reason: str) -> None:
            self.ended.append(reason)
            self.ended_event.set()

        return CallHooks(on_call_started=started, on_call_ended=ended)


class App:
    def __init__(self, app: web.Application, runner: web.AppRunner) -> None:
        self.app = app
        self.runner = runner

    @property
    def line(self) -> SipLine:
        return self.app[SIP_LINE]

    @property
    def calls(self) -> int:
        return len(self.app[STATE].registry.all())


@contextlib.asynccontextmanager
async def sip_app(engines: Engines, config: CallbotConfig,
                  hooks: CallHooks | None = None) -> AsyncIterator[App]:
    app = create_app(config, engines=engines, hooks=hooks)
    runner = web.AppRunner(app)
    await runner.setup()  # on_startup: the SIP line listens
    try:
        yield App(app, runner)
    finally:
        await runner.cleanup()


class Softphone:
    """baresip in a folder of its own, answering nothing, calling when told."""

    def __init__(self, folder: Path, microphone: Path, *, user: str = "alice",
                 password: str | None = None) -> None:
        self.folder = folder
        self.ctrl_port = free_udp_port()
        self.sip_port = free_udp_port()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config").write_text("\n".join([
            f"module_path {MODULES}",
            f"sip_listen {LOOPBACK}:{self.sip_port}",
            "net_interface 127.0.0.1",  # a loopback-only namespace: no other interface
            "net_af ipv4",
            f"audio_source aufile,{microphone}",
            "audio_player aubridge,nowhere",
            "audio_alert aubridge,nowhere",
            "ausrc_srate 8000",
            "auplay_srate 8000",
            f"snd_path {folder}",
            "rtp_timeout 0",
            f"ctrl_tcp_listen {LOOPBACK}:{self.ctrl_port}",
            "module_tmp uuid.so",
            "module_tmp account.so",
            "module g711.so",
            "module aufile.so",
            "module aubridge.so",
            "module sndfile.so",
            "module menu.so",
            "module_app ctrl_tcp.so",
            "",
        ]))
        auth = f";auth_pass={password}" if password else ""
        (folder / "accounts").write_text(
            f"<sip:{user}@{LOOPBACK}>{auth};regint=0;audio_codecs=PCMU,PCMA\n")
        self.process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None

    async def start(self) -> None:
        with (self.folder / "baresip.log").open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(BARESIP), "-f", str(self.folder), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        for _ in range(100):
            with contextlib.suppress(OSError):
                self._reader, self._writer = await asyncio.open_connection(
                    LOOPBACK, self.ctrl_port)
                return
            await asyncio.sleep(0.1)
        raise AssertionError("baresip did not start: " + self.log())

    async def command(self, command: str, params: str = "") -> None:
        assert self._writer is not None
        data = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        self._writer.write(b"%d:%s," % (len(data), data))
        await self._writer.drain()

    async def event(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next ctrl_tcp event of `kind` (e.g. CALL_CLOSED), skipping the others."""
        assert self._reader is not None
        async with asyncio.timeout(timeout):
            while True:
                size = int((await self._reader.readuntil(b":"))[:-1])
                message = json.loads((await self._reader.readexactly(size + 1))[:-1])
                if message.get("event") and message.get("type") == kind:
                    return dict(message)

    def log(self) -> str:
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def heard(self) -> np.ndarray:
        """What the phone played (sndfile's decode-side dump), 8 kHz int16."""
        dumps = sorted(self.folder.glob("dump-*-dec.wav"))
        assert dumps, "sndfile recorded nothing: " + self.log()
        with wave.open(str(dumps[-1])) as w:
            return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def microphone(folder: Path, clip: speech.Clip, seconds: float) -> Path:
    """The question at 8 kHz, padded with silence to `seconds` (aufile ends the call at EOF)."""
    phone = clip.at_rate(8000)
    tail = max(0.0, seconds - phone.seconds)
    folder.mkdir(parents=True, exist_ok=True)
    return phone.padded(0.5, tail).write_wav(folder / "question.wav")


async def until(predicate: Any, timeout: float, what: str) -> None:
    for _ in range(int(timeout * 10)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(BARESIP is None, reason="baresip-core is not installed (.ci/debian-packages)")
async def test_a_softphone_asks_presses_a_digit_and_hangs_up(engines: Engines, question,
                                                            tmp_path: Path) -> None:
    recorder = Recorder()
    config = sip_config()
    async with sip_app(engines, config, recorder.hooks()) as served:
        line = served.line
        phone = Softphone(tmp_path / "phone", microphone(tmp_path, question, 40.0))
        await phone.start()
        try:
            host, port = line.address
            await phone.command("dial", f"sip:bot@{host}:{port}")
            await asyncio.wait_for(recorder.started.wait(), 20)
            handle = recorder.handles[0]
            call = served.app[STATE].registry.get(handle.call_id)
            assert call is not None and call.transport.kind == "sip"
            # the bot answers the spoken question
            await until(lambda: any(isinstance(e, ev.ResponseAudioDone) for e in recorder.events),
                        60, "the bot's spoken answer")
            await phone.command("sndcode", "2")
            await until(lambda: any(isinstance(e, ev.Dtmf) for e in recorder.events), 10,
                        "the dtmf event")
            digits = [e.digit for e in recorder.events if isinstance(e, ev.Dtmf)]
            assert digits[0] == "2", digits
            # the keypad entry becomes a turn the bot answers too
            answers = sum(isinstance(e, ev.ResponseAudioDone) for e in recorder.events)
            await until(lambda: sum(isinstance(e, ev.ResponseAudioDone)
                                    for e in recorder.events) > answers, 60,
                        "the bot's reaction to the digit")
            await asyncio.sleep(1.0)  # hear a little of the reaction
            await phone.command("hangup")
            await asyncio.wait_for(recorder.ended_event.wait(), 15)
            assert recorder.ended == ["caller_hangup"]
            await until(lambda: served.calls == 0 and line.ports_in_use == 0, 10,
                        "the call and its RTP port released")
            assert not line.uas.active_calls, "the dialog was not forgotten"
        finally:
            await phone.stop()  # the recording is complete once baresip is gone
        heard = phone.heard()
    # the phone heard the bot: speech energy, and Whisper hears words in it
    assert heard.size > 8000 * 5, "the recording is too short"
    frames = heard[: heard.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    voiced_s = float((rms > 300).sum()) * 0.02
    assert voiced_s > 1.0, f"only {voiced_s:.2f} s of the bot's voice reached the phone"
    from callbot.rtc.resample import resample_pcm

    text = (await engines.asr.transcribe(resample_pcm(heard, 8000, PIPELINE_RATE))).text
    assert len(text.split()) >= 3, f"the phone heard no reply: {text!r}"


# ---- raw SIP over UDP: refusals, floods, bad input ---------------------------------------------


class RawSip(asyncio.DatagramProtocol):
    """A bare UDP SIP peer: sends hand-written requests, collects final responses by Call-ID."""

    def __init__(self) -> None:
        self.responses: dict[str, list[tuple[int, str]]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (not an isinstance check: CPython 3.11.7's selector datagram transport fails it)
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode(errors="replace")
        status = int(text.split(" ", 2)[1]) if text.startswith("SIP/2.0") else 0
        call_id = next((line.split(":", 1)[1].strip() for line in text.split("\r\n")
                        if line.lower().startswith(("call-id:", "i:"))), "")
        self.responses.setdefault(call_id, []).append((status, text))

    def final(self, call_id: str) -> tuple[int, str] | None:
        return next((r for r in self.responses.get(call_id, []) if r[0] >= 200), None)

    def invite(self, target: tuple[str, int], *, codecs: str = "0 8 101",
               extra: str = "", call_id: str | None = None, cseq: int = 1) -> str:
        call_id = call_id or uuid.uuid4().hex
        sdp = (f"v=0\r\no=- 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
               f"m=audio {self.port + 2} RTP/AVP {codecs}\r\na=rtpmap:101 telephone-event/8000\r\n"
               "a=sendrecv\r\n")
        self.send(target, (
            f"INVITE sip:bot@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
            f"From: <sip:caller{call_id[:6]}@{LOOPBACK}>;tag={call_id[:8]}\r\n"
            f"To: <sip:bot@{target[0]}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n"
            f"Contact: <sip:caller@{LOOPBACK}:{self.port}>\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"))
        return call_id

    def send(self, target: tuple[str, int], text: str | bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(text.encode() if isinstance(text, str) else text, target)


@contextlib.asynccontextmanager
async def raw_peer() -> AsyncIterator[RawSip]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(RawSip, local_addr=(LOOPBACK, 0))
    try:
        yield peer
    finally:
        transport.close()


def assert_nothing_left(served: App) -> None:
    line = served.line
    assert served.calls == 0, "a refused INVITE left a call"
    assert line.ports_in_use == 0, "a refused INVITE kept an RTP port"
    assert line.uas is not None and not line.uas.active_calls, "a refused INVITE left a dialog"


async def test_unknown_peers_and_bad_credentials_are_refused(engines: Engines) -> None:
    async with sip_app(engines, sip_config(allow=("10.9.0.0/16",))) as served, \
            raw_peer() as peer:
        target = served.line.address
        call_id = peer.invite(target)
        await until(lambda: peer.final(call_id) is not None, 5, "a response")
        assert peer.final(call_id)[0] == 403  # type: ignore[index]
        assert_nothing_left(served)
    async with sip_app(engines, sip_config(username="pbx", password="s3cret")) as served, \
            raw_peer() as peer:
        target = served.line.address
        call_id = peer.invite(target)
        await until(lambda: peer.final(call_id) is not None, 5, "a challenge")
        status, text = peer.final(call_id)  # type: ignore[misc]
        assert status == 401 and "WWW-Authenticate: Digest" in text
        nonce = text.split('nonce="', 1)[1].split('"', 1)[0]
        wrong = (f'Authorization: Digest username="pbx", realm="callbot", nonce="{nonce}", '
                 f'uri="sip:bot@{target[0]}:{target[1]}", response="{"0" * 32}"\r\n')
        again = peer.invite(target, extra=wrong)
        await until(lambda: peer.final(again) is not None, 5, "a refusal")
        assert peer.final(again)[0] == 403  # type: ignore[index]
        assert_nothing_left(served)


@pytest.mark.skipif(BARESIP is None, reason="baresip-core is not installed (.ci/debian-packages)")
async def test_a_softphone_with_the_right_password_gets_through(engines: Engines, question,
                                                                tmp_path: Path) -> None:
    recorder = Recorder()
    config = sip_config(username="alice", password="s3cret")
    async with sip_app(engines, config, recorder.hooks()) as served:
        phone = Softphone(tmp_path / "phone", microphone(tmp_path, question, 20.0),
                          user="alice", password="s3cret")
        await phone.start()
        try:
            host, port = served.line.address
            await phone.command("dial", f"sip:bot@{host}:{port}")
            await asyncio.wait_for(recorder.started.wait(), 20)
            await phone.event("CALL_ESTABLISHED")
            await recorder.handles[0].hang_up()  # CallHandle.hang_up: BYE to the phone
            await asyncio.wait_for(recorder.ended_event.wait(), 10)
            assert recorder.ended == ["app_hangup"]
            await until(lambda: served.calls == 0 and served.line.ports_in_use == 0, 10,
                        "the call released")
            await phone.event("CALL_CLOSED")  # the phone's call ended too (our BYE)
        finally:
            await phone.stop()
        assert served.line.refusals.get(401, 0) >= 1, "the phone was not challenged"


async def test_a_flood_beyond_the_limit_is_busy_and_leaves_nothing(engines: Engines) -> None:
    config = replace(sip_config(), limits=replace(TEST_CONFIG.limits, max_calls=1))
    async with sip_app(engines, config) as served, raw_peer() as peer:
        target = served.line.address
        first = peer.invite(target)
        await until(lambda: peer.final(first) is not None, 20, "the first call answered")
        assert peer.final(first)[0] == 200  # type: ignore[index]
        flood = [peer.invite(target) for _ in range(20)]
        await until(lambda: all(peer.final(c) is not None for c in flood), 20, "20 answers")
        statuses = sorted({peer.final(c)[0] for c in flood})  # type: ignore[index]
        assert set(statuses) <= {486, 503}, statuses
        assert served.calls == 1 and served.line.ports_in_use == 1
        assert served.line.uas is not None and len(served.line.uas.active_calls) == 1
        # the first call ends with the caller's BYE: nothing is left
        ok = peer.final(first)[1]  # type: ignore[index]
        to_tag = next(line for line in ok.split("\r\n") if line.lower().startswith("to:"))
        peer.send(target, (
            f"BYE sip:bot@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{peer.port};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
            f"From: <sip:caller{first[:6]}@{LOOPBACK}>;tag={first[:8]}\r\n{to_tag}\r\n"
            f"Call-ID: {first}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"))
        await until(lambda: served.calls == 0 and served.line.ports_in_use == 0, 10,
                    "the first call released")
        assert_nothing_left(served)


async def test_bad_input_gets_the_right_response(engines: Engines) -> None:
    async with sip_app(engines, sip_config()) as served, raw_peer() as peer:
        target = served.line.address
        peer.send(target, b"\x00\xffnot sip at all\r\n\r\n")  # dropped, nothing else happens
        peer.send(target, b"INVITE sip:bot@x SIP/2.0\r\nContent-Length: 0\r\n\r\n")  # no Via
        opus = peer.invite(target, codecs="111 101")  # no G.711: 488
        await until(lambda: peer.final(opus) is not None, 5, "488")
        assert peer.final(opus)[0] == 488  # type: ignore[index]
        no_from = uuid.uuid4().hex
        peer.send(target, (
            f"INVITE sip:bot@{target[0]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{peer.port};branch=z9hG4bK{no_from[:12]}\r\n"
            f"Call-ID: {no_from}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"))
        await until(lambda: peer.final(no_from) is not None, 5, "400")
        assert peer.final(no_from)[0] == 400  # type: ignore[index]
        assert_nothing_left(served)
        # the line still answers
        good = peer.invite(target)
        await until(lambda: peer.final(good) is not None, 20, "an answer")
        assert peer.final(good)[0] == 200  # type: ignore[index]
